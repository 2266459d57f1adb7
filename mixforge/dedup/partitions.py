"""How many partitions a run's band-bucket shuffle has (`DedupConfig.partitions`, resolved)."""

from __future__ import annotations

from collections.abc import Sequence

from mixforge import storage
from mixforge.dedup.config import DedupConfig
from mixforge.dedup.layouts import IndexLayout

PARTITION_INPUT_BYTES = 64 << 20  # input bytes per shuffle partition when `partitions` is auto
MIN_PARTITIONS, MAX_AUTO_PARTITIONS = 16, 4096  # MIN_PARTITIONS: for a new index (it keeps its count for good)


def auto_partitions(input_bytes: int, minimum: int = MIN_PARTITIONS) -> int:
    """Partitions for `input_bytes` of input shards: one per 64 MiB (`minimum` to 4096).

    A partition's band rows grow with the documents behind it, so a fixed count lets the
    edges step's memory grow with the corpus; this keeps it about constant. The count
    changes only speed and memory, never results: a bucket lives in exactly one partition.
    Each (partition, shard) pair costs two small files and two reads, so a small run gets few.
    """
    return int(min(MAX_AUTO_PARTITIONS, max(minimum, -(-int(input_bytes) // PARTITION_INPUT_BYTES))))


def input_bytes(uris: Sequence[str], storage_options=None) -> int:
    total = 0
    for uri in uris:
        fs, path = storage.filesystem(uri, storage_options)
        total += int(fs.size(path) or 0)
    return total


def resolve_partitions(
    cfg: DedupConfig, uris: Sequence[str], index: IndexLayout | None = None, storage_options=None
) -> DedupConfig:
    """`cfg` with `partitions` set: the explicit value, else an existing index's, else auto from
    the input size: at least `MIN_PARTITIONS` for a new index (whose count its later, larger runs keep),
    at least 1 for a run without one. (An explicit value that differs from the index's is refused by
    `check_index`.)"""
    if cfg.partitions is not None:
        return cfg
    if index is not None and storage.exists(index.settings, storage_options):
        have = storage.read_json(index.settings, storage_options).get("partitions")
        if have:
            return cfg.model_copy(update={"partitions": int(have)})
    minimum = MIN_PARTITIONS if index is not None else 1
    return cfg.model_copy(update={"partitions": auto_partitions(input_bytes(uris, storage_options), minimum)})
