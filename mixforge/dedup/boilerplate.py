"""Boilerplate lines: lines repeated across many documents (menus, cookie banners, licence
footers) are counted corpus-wide and removed from every document that has them.

Three vectorised steps, distributed by the caller like the MinHash buckets:
  1. per shard: `line_hashes` -> distinct (document, line hash) pairs;
  2. per hash partition: `count_line_docs` (and `merge_line_counts` across shards) ->
     documents per line hash; `boilerplate_hashes` keeps those seen in >= min_docs documents;
  3. per shard: `remove_lines` drops the lines whose hash is boilerplate.
A line is compared after trimming whitespace (and lowercasing, if configured); lines shorter
than `min_chars` are never counted or removed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.dedup.config import BoilerplateConfig
from mixforge.dedup.hashing import hash_strings

_LINE_SEED = 0x6C696E65  # "line": line hashes never equal document hashes


def _lines(text: pa.Array | pa.ChunkedArray) -> tuple[pa.ListArray, pa.Array, np.ndarray]:
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    lists = pc.split_pattern(pc.fill_null(text, ""), "\n")
    off = np.asarray(lists.offsets, dtype=np.int64)
    flat = lists.values.slice(int(off[0]), int(off[-1] - off[0]))
    return lists, flat, off - off[0]


def _line_keys(flat: pa.Array, cfg: BoilerplateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(hash, eligible) of every line."""
    norm = pc.utf8_trim_whitespace(flat)
    if cfg.lowercase:
        norm = pc.utf8_lower(norm)
    eligible = pc.utf8_length(norm).to_numpy(zero_copy_only=False) >= cfg.min_chars
    return hash_strings(norm, seed=_LINE_SEED), eligible


def line_hashes(
    text: pa.Array | pa.ChunkedArray, cfg: BoilerplateConfig = BoilerplateConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (document index int64, line hash uint64) pairs of the eligible lines of each
    document (a line repeated inside one document counts once), sorted by (document, hash)."""
    _, flat, off = _lines(text)
    h, ok = _line_keys(flat, cfg)
    doc = np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))[ok]
    h = h[ok]
    order = np.lexsort((h, doc))
    doc, h = doc[order], h[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = (doc[1:] != doc[:-1]) | (h[1:] != h[:-1])
    return doc[first], h[first]


def count_line_docs(line_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct line hashes, documents holding each) from `line_hashes` output (per-document
    distinct, so a hash's occurrences are documents)."""
    return np.unique(np.asarray(line_hash, dtype=np.uint64), return_counts=True)


def merge_line_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum several (hashes, counts) results of `count_line_docs` (from disjoint document sets)."""
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = np.concatenate([p[0] for p in parts]).astype(np.uint64)
    c = np.concatenate([p[1] for p in parts]).astype(np.int64)
    uniq, inv = np.unique(h, return_inverse=True)
    return uniq, np.bincount(inv, weights=c, minlength=len(uniq)).astype(np.int64)


def boilerplate_hashes(
    hashes: np.ndarray, counts: np.ndarray, cfg: BoilerplateConfig = BoilerplateConfig()
) -> np.ndarray:
    """Sorted line hashes present in at least `cfg.min_docs` documents."""
    return np.sort(np.asarray(hashes, dtype=np.uint64)[np.asarray(counts) >= cfg.min_docs])


def remove_lines(
    text: pa.Array | pa.ChunkedArray, boilerplate: np.ndarray, cfg: BoilerplateConfig = BoilerplateConfig()
) -> tuple[pa.Array, np.ndarray]:
    """Text with every eligible line whose hash is in `boilerplate` (sorted uint64) removed,
    and the number of lines removed per document. Null text stays null; other lines and
    their order are untouched."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    lists, flat, off = _lines(text)
    h, ok = _line_keys(flat, cfg)
    boilerplate = np.asarray(boilerplate, dtype=np.uint64)
    if len(boilerplate):
        i = np.minimum(np.searchsorted(boilerplate, h), len(boilerplate) - 1)
        drop = ok & (boilerplate[i] == h)
    else:
        drop = np.zeros(len(h), bool)
    doc = np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))
    removed = np.bincount(doc[drop], minlength=len(off) - 1).astype(np.int64)
    keep_per_doc = np.diff(off) - removed
    new_off = np.zeros(len(off), dtype=np.int32 if pa.types.is_list(lists.type) else np.int64)
    np.cumsum(keep_per_doc, out=new_off[1:])
    kept = pa.ListArray.from_arrays(pa.array(new_off), flat.filter(pa.array(~drop))) if len(new_off) else lists
    out = pc.binary_join(kept, pa.scalar("\n", flat.type))
    if text.null_count:
        out = pc.if_else(text.is_valid(), out, pa.scalar(None, out.type))
    return out.cast(text.type), removed
