"""Candidate edges from LSH buckets, connected components, and keeper choice -- all numpy.

Document keys are uint64 (the dedup steps use `mixforge.dedup.keys`). Memory of
every function here is proportional to the number of bucket rows / edges it is given, never
to the number of documents in the corpus: documents without an edge are singletons, kept,
with `dup_count` 1, and never reach these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KeepRule = Literal["highest", "longest", "earliest", "smallest_id"]


def _dedup_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (src, dst) pairs, sorted by (src, dst)."""
    if len(src) == 0:
        return src, dst
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return src[first], dst[first]


def candidate_edges(band: np.ndarray, band_hash: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges linking documents that share a bucket (equal band and band_hash).

    For every bucket with two or more distinct documents, one edge from each member to the
    bucket's smallest document. Returns (src, dst) uint64, src > dst, unique, sorted by
    (src, dst). Also usable for exact dedup: band = 0, band_hash = exact hash.
    """
    band = np.asarray(band)
    band_hash = np.asarray(band_hash, dtype=np.uint64)
    doc = np.asarray(doc, dtype=np.uint64)
    if len(doc) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    order = np.lexsort((doc, band_hash, band))
    b, h, d = band[order], band_hash[order], doc[order]
    new_group = np.ones(len(d), dtype=bool)
    new_group[1:] = (b[1:] != b[:-1]) | (h[1:] != h[:-1])
    group_start = np.flatnonzero(new_group)
    group_min = d[group_start][np.cumsum(new_group) - 1]
    member = d != group_min  # drops the minimum itself and repeats of it
    return _dedup_pairs(d[member], group_min[member])


def connected_components(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the undirected graph given by its edges.

    Returns (nodes, roots): every node that appears in an edge (sorted, unique, uint64) and
    the smallest node of its component. Vectorised union-find: every round hooks each tree
    root onto the smallest root it shares an edge with (`np.minimum.at`), then pointer
    jumping flattens the forest; rounds repeat until no edge crosses two trees. Memory is
    O(edges); chains, stars and giant components converge in a few rounds.
    """
    src = np.asarray(src, dtype=np.uint64)
    dst = np.asarray(dst, dtype=np.uint64)
    nodes, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    if len(nodes) == 0:
        return nodes, nodes.copy()
    # dense ids follow node order, so the smallest dense id of a component is its smallest node
    dtype = np.int32 if len(nodes) < 2**31 else np.int64
    inv = inv.astype(dtype, copy=False)
    u, v = inv[: len(src)], inv[len(src) :]
    parent = np.arange(len(nodes), dtype=dtype)
    while True:
        pu, pv = parent[u], parent[v]
        cross = pu != pv
        if not cross.any():
            break
        pu, pv = pu[cross], pv[cross]
        # keep only edges still crossing trees: later rounds get cheaper
        u, v = u[cross], v[cross]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return nodes, nodes[parent]


@dataclass(frozen=True)
class ClusterAssignment:
    """Per-node result of clustering, all arrays aligned with `nodes` (sorted uint64)."""

    nodes: np.ndarray  # uint64 document keys
    cluster: np.ndarray  # uint64: smallest key of the cluster (-> `dup_cluster`)
    kept: np.ndarray  # uint64: key of the cluster's kept document
    is_kept: np.ndarray  # bool
    size: np.ndarray  # int64: documents in the cluster (-> `dup_count`)


def choose_keepers(
    nodes: np.ndarray,
    roots: np.ndarray,
    rule: KeepRule = "smallest_id",
    value: np.ndarray | pa.Array | None = None,
    ids: pa.Array | list[str] | None = None,
    prefer: np.ndarray | None = None,
) -> ClusterAssignment:
    """One kept document per cluster, deterministically.

    `value` (aligned with `nodes`) is what the rule ranks: 'highest' keeps the largest (e.g.
    a quality score), 'earliest' the smallest (e.g. a timestamp), 'longest' the largest (the
    caller passes text lengths); 'smallest_id' ignores it. Null/NaN values rank last under
    every rule. Ties (and 'smallest_id') go to the smallest `ids` string (when given), then
    to the smallest node key -- never to input or worker order. Nodes where `prefer` is True
    win over all others in their cluster.
    """
    nodes = np.asarray(nodes, dtype=np.uint64)
    roots = np.asarray(roots, dtype=np.uint64)
    n = len(nodes)
    cols: dict[str, pa.Array] = {"root": pa.array(roots)}
    keys: list[tuple[str, str, str]] = [("root", "ascending", "at_end")]
    if prefer is not None:  # e.g. documents already in the pool: they win whatever the rule says
        cols["prefer"] = pa.array(np.asarray(prefer, bool))
        keys.append(("prefer", "descending", "at_end"))
    if rule != "smallest_id":
        if value is None:
            raise ValueError(f"keep rule {rule!r} needs `value`")
        v = value if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(value), from_pandas=True)
        if pa.types.is_floating(v.type):
            v = pc.if_else(pc.is_nan(v), pa.scalar(None, v.type), v)
        cols["value"] = v
        keys.append(("value", "ascending" if rule == "earliest" else "descending", "at_end"))
    if ids is not None:
        cols["id"] = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, pa.string())
        keys.append(("id", "ascending", "at_end"))
    cols["node"] = pa.array(nodes)
    keys.append(("node", "ascending", "at_end"))
    order = pc.sort_indices(pa.table(cols), sort_keys=keys).to_numpy()
    r = roots[order]
    first = np.ones(n, dtype=bool)
    first[1:] = r[1:] != r[:-1]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    kept_sorted = nodes[order][starts][group]
    kept = np.empty(n, dtype=np.uint64)
    kept[order] = kept_sorted
    size = np.empty(n, dtype=np.int64)
    size[order] = sizes[group]
    return ClusterAssignment(nodes=nodes, cluster=roots, kept=kept, is_kept=kept == nodes, size=size)
