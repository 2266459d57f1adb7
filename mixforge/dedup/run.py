"""`DedupRun`: what every step of one dedup run shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixforge.dedup.config import DedupConfig
from mixforge.dedup.layouts import DedupLayout, IndexLayout


@dataclass(frozen=True)
class DedupRun:
    """What every step of one dedup run shares: each call gets it whole, plus its own unit
    (a shard, a partition), so no call site re-types a step's wiring."""

    work: DedupLayout
    cfg: DedupConfig  # `partitions` resolved (plan_dedup)
    shards: tuple[int, ...]  # the run's shard indices
    index: IndexLayout | None = None
    segments: tuple[int, ...] = ()  # the index's committed segments this run deduplicates against
    batch_rows: int = 8192
    storage_options: Mapping[str, Any] | None = None
    # The run's boilerplate line hashes (sorted), once found; signing and apply remove those lines.
    boilerplate: np.ndarray | None = field(default=None, compare=False)

    @property
    def partitions(self) -> int:
        return self.cfg.partitions

    @property
    def verify(self) -> bool:
        """Whether MinHash edges are verified (the clusters then read the verified edges)."""
        return self.cfg.minhash.enabled and self.cfg.minhash.verify
