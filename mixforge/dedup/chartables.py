"""The signature kernel's per-codepoint tables, read off Arrow itself, and their cache on disk.

    lower[cp]  Arrow's utf8_lower (one codepoint to one)
    flags[cp]  WS (Arrow's Unicode whitespace), PUNCT (RE2 \\p{P}), DIGIT (RE2 \\p{Nd})

Building them runs Arrow's kernels over every codepoint (~0.3 CPU-s), once per worker process
without a cache: the largest fixed cost of a small dedup run. So they are kept on disk beside numba's
compiled kernel (NUMBA_CACHE_DIR, else `__pycache__` next to this file, else the user's cache
directory), in a file named by everything they are read from: the pyarrow version and build (Arrow
bundles utf8proc and RE2, whose Unicode data the tables copy) and `TABLES_VERSION` (bump it when
`_classify` changes). A loaded file is checked against a fresh build of a sample of codepoints (every
range of the Unicode space, and every codepoint where a table differs from the identity or from 0), so
a pyarrow rebuilt against other libraries under the same version does not use a stale table either: a
mismatch is rebuilt and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

WS, PUNCT, DIGIT = 1, 2, 4  # bits of the flags table
TABLES_VERSION = 1  # bump when `_classify` changes what the tables hold
CODEPOINTS = 0x110000
# The check's sample (~30k codepoints, a few ms): every one below _SAMPLE_DENSE (the alphabets with case,
# most punctuation and digits), every _SAMPLE_STEP-th above, and every one the loaded tables map or flag.
_SAMPLE_DENSE, _SAMPLE_STEP = 0x3100, 97


def _codepoints() -> np.ndarray:
    """Every codepoint but the surrogates (not encodable in UTF-8), int64."""
    return np.concatenate([np.arange(0xD800), np.arange(0xE000, CODEPOINTS)]).astype(np.int64)


def _classify(cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, flags) of the codepoints `cps` (int64, no surrogates), by Arrow's own kernels."""
    text = cps.astype("<u4").tobytes().decode("utf-32-le")
    whole = pa.array([text], pa.large_string())  # the codepoints once each, in one string

    def each(out: pa.Array) -> np.ndarray:  # the codepoints of a one-string result
        got = np.frombuffer(out[0].as_py().encode("utf-32-le"), np.uint32).astype(np.int64)
        if len(got) != len(cps):
            raise RuntimeError("this Arrow maps some codepoint to several; the compiled kernel assumes one")
        return got

    lower = each(pc.utf8_lower(whole)).astype(np.int32)
    flags = np.zeros(len(cps), np.uint8)
    for bit, pattern in ((PUNCT, r"\p{P}"), (DIGIT, r"\p{Nd}")):
        flags[(each(pc.replace_substring_regex(whole, pattern, "\x00")) == 0) & (cps != 0)] |= bit
    # whitespace: Arrow's own predicate (utf8_trim_whitespace), one string per codepoint
    lengths = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    off = np.zeros(len(cps) + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    single = pa.Array.from_buffers(pa.large_string(), len(cps), [None, pa.py_buffer(off), pa.py_buffer(text.encode())])
    trimmed = pc.utf8_length(pc.utf8_trim_whitespace(single)).to_numpy(zero_copy_only=False)
    flags[trimmed == 0] |= WS
    return lower, flags


def build_tables() -> tuple[np.ndarray, np.ndarray]:
    """(lower int32, flags uint8), indexed by codepoint (surrogates: themselves, no flag)."""
    cps = _codepoints()
    lower = np.arange(CODEPOINTS, dtype=np.int32)
    flags = np.zeros(CODEPOINTS, np.uint8)
    lower[cps], flags[cps] = _classify(cps)
    return lower, flags


def cache_key() -> str:
    info = pa.cpp_build_info
    parts = (TABLES_VERSION, pa.__version__, info.version, info.git_id, info.compiler_id, info.package_kind)
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def cache_dirs() -> list[Path]:
    """Where the tables may be kept, in order (numba's choice for its own cache, without importing numba)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [Path(os.environ["NUMBA_CACHE_DIR"])]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mixforge"
    return [Path(__file__).parent / "__pycache__", user]


def agrees_with_arrow(lower: np.ndarray, flags: np.ndarray) -> bool:
    """Whether the tables hold what this Arrow gives on a sample of codepoints (`_SAMPLE_DENSE`)."""
    if lower.shape != (CODEPOINTS,) or flags.shape != (CODEPOINTS,):
        return False
    cps = _codepoints()
    sample = cps[(cps < _SAMPLE_DENSE) | (cps % _SAMPLE_STEP == 0) | (lower[cps] != cps) | (flags[cps] != 0)]
    want_lower, want_flags = _classify(sample)
    return bool(np.array_equal(lower[sample], want_lower) and np.array_equal(flags[sample], want_flags))


def _load(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            lower, flags = z["lower"], z["flags"]
    except (OSError, ValueError, KeyError):
        return None
    if lower.dtype != np.int32 or flags.dtype != np.uint8 or not agrees_with_arrow(lower, flags):
        return None
    return lower, flags


def _save(directory: Path, name: str, lower: np.ndarray, flags: np.ndarray) -> bool:
    """Write atomically (a concurrent worker may be writing the same file); False if the place is read-only."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, lower=lower, flags=flags)
            os.chmod(tmp, 0o644)  # as numba's cache files: readable by every user of a shared directory
            os.replace(tmp, directory / name)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError:
        return False
    return True


@functools.cache
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """(lower, flags) for every codepoint: from the disk cache when it holds this Arrow's tables, else built
    (and cached for the next process)."""
    name = f"chartables-{cache_key()}.npz"
    dirs = cache_dirs()
    for d in dirs:
        got = _load(d / name)
        if got is not None:
            return got
    lower, flags = build_tables()
    for d in dirs:
        if _save(d, name, lower, flags):
            break
    return lower, flags
