"""Document keys: one uint64 per document, of this run or of the pool's index, that says where its rows live.

    run key     shard << 32 | row                                  (shard < 2**31, row < 2**32)
    index key   1 << 63 | segment << 40 | shard << 24 | row         (segment < 2**23, shard < 2**16, row < 2**24)

The top bit sets index keys apart, and sorts them after every run key. A key's *group* names the
file its node and signature rows live in: a run key's is its shard (`key >> 32`), an index key's
the segment's shard (`key >> 24`: flag | segment << 16 | shard). Every number below is derived
from these bit widths.
"""

from __future__ import annotations

import numpy as np

RUN_ROW_BITS = 32  # run key: shard << 32 | row
INDEX_ROW_BITS, INDEX_SHARD_BITS = 24, 16  # index key: flag | segment << 40 | shard << 24 | row
INDEX_FLAG_BIT = 63
INDEX_SEGMENT_SHIFT = INDEX_SHARD_BITS + INDEX_ROW_BITS  # 40

INDEX_FLAG = np.uint64(1 << INDEX_FLAG_BIT)  # keys of documents already in the pool's index
MAX_INDEX_ROWS = 1 << INDEX_ROW_BITS
MAX_INDEX_SHARDS = 1 << INDEX_SHARD_BITS
MAX_SEGMENTS = 1 << (INDEX_FLAG_BIT - INDEX_SEGMENT_SHIFT)
INDEX_GROUP_FLAG = 1 << (INDEX_FLAG_BIT - INDEX_ROW_BITS)  # the flag bit, in an index key's group

_RUN_ROW_MASK = np.uint64((1 << RUN_ROW_BITS) - 1)


def doc_keys(shard_index: int, first_row: int, n: int) -> np.ndarray:
    """Run keys of `n` consecutive rows of a shard, from `first_row`."""
    rows = np.arange(first_row, first_row + n, dtype=np.uint64)
    return (np.uint64(shard_index) << np.uint64(RUN_ROW_BITS)) | rows


def key_shard(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) >> np.uint64(RUN_ROW_BITS)).astype(np.int64)


def key_row(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) & _RUN_ROW_MASK).astype(np.uint32)


def is_index_key(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) & INDEX_FLAG) != 0


def index_keys(segment: int, run_keys: np.ndarray) -> np.ndarray:
    """Run keys (shard << 32 | row) -> index keys (flag | segment << 40 | shard << 24 | row)."""
    shard, row = key_shard(run_keys), key_row(run_keys).astype(np.uint64)
    if len(run_keys) and (shard.max() >= MAX_INDEX_SHARDS or row.max() >= MAX_INDEX_ROWS):
        raise ValueError(f"the dedup index holds at most {MAX_INDEX_SHARDS} shards of {MAX_INDEX_ROWS} rows per run")
    return (
        INDEX_FLAG
        | (np.uint64(segment) << np.uint64(INDEX_SEGMENT_SHIFT))
        | (shard.astype(np.uint64) << np.uint64(INDEX_ROW_BITS))
        | row
    )


def key_group(keys: np.ndarray) -> np.ndarray:
    """The file group a key's node and signature rows live in: a run shard, or an index segment's shard."""
    keys = np.asarray(keys, np.uint64)
    return np.where(is_index_key(keys), keys >> np.uint64(INDEX_ROW_BITS), keys >> np.uint64(RUN_ROW_BITS)).astype(
        np.uint64
    )


def index_group(group: int) -> tuple[int, int] | None:
    """(segment, shard) of an index key's group (`key_group`); None for a run shard."""
    if group < INDEX_GROUP_FLAG:
        return None
    return (group >> INDEX_SHARD_BITS) & (MAX_SEGMENTS - 1), group & (MAX_INDEX_SHARDS - 1)
