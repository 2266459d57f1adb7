"""Seeds: every random choice of a mixture comes from the spec seed and stable names."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_seed(seed: int, *names: str) -> np.random.SeedSequence:
    """A SeedSequence from the spec seed and names, stable across processes (not Python's hash())."""
    digest = hashlib.blake2b("\x1f".join(names).encode(), digest_size=8).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest, "little")])


def rng_for(seed: int, *names: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(stable_seed(seed, *names)))
