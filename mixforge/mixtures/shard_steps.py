"""Per-shard work of planning and drawing a mixture.

Every function here reads one pool shard (annotation columns and its token-count sidecar) and
returns small aggregates, so the driver never holds pool rows: planning memory stays flat as the
pool grows (DESIGN.md). They run as Ray tasks in the flow and in-process in tests.

Selection is by seeded keys. A group's partial pass orders its *copies* (a document once, or its
repeat count when rehydrating) by a key, smallest first; the group's sampler (samplers.py) says how
many copies a document has and turns u ~ U[0, 1) into its key (uniform: u itself). The u come from
a numpy Generator seeded by (seed, phase, group, shard index), so every round of the search and the
final draw see the same keys. Order ties (equal keys) break by (shard, row, copy).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.mixtures.pool import PoolError, assign_groups, match_counts
from mixforge.mixtures.seeds import rng_for
from mixforge.mixtures.spec import MixSpec
from mixforge.schema import MIX_GROUP, N_TOKENS
from mixforge.shards import parquet_file

# helper columns of the scratch pieces (dropped when the final shards are written)
FILE, SHUFFLE, SHARD, ROW, REP = "_file", "_shuffle", "_shard", "_row", "_rep"
SCRATCH_COMPRESSION = "lz4"


@dataclass(frozen=True)
class ShardRef:
    index: int
    uri: str
    rows: int
    sidecar: str  # token counts of the shard's rows (tokens.py)


@dataclass(frozen=True)
class PoolView:
    """What every per-shard step needs of the mixture: its spec, the annotation columns to read,
    and the groups' pool-wide sampler facts."""

    spec: MixSpec
    columns: tuple[str, ...]  # annotation columns to read
    norms: Mapping[str, Any] = field(
        default_factory=dict
    )  # group name -> its sampler's pool-wide facts (Sampler.norm)


@dataclass
class ShardData:
    frame: pl.DataFrame
    tokens: np.ndarray  # int64 per row
    group: np.ndarray  # int16 per row: group index in spec order, -1 for none


def load(view: PoolView, ref: ShardRef, storage_options: Mapping[str, Any] | None = None) -> ShardData:
    with parquet_file(ref.uri, storage_options) as pf:
        present = [c for c in view.columns if c in pf.schema_arrow.names]
        table = pf.read(columns=present, use_threads=False)
    frame = pl.from_arrow(table) if present else pl.DataFrame()
    if not isinstance(frame, pl.DataFrame):
        frame = frame.to_frame()
    for col in view.columns:  # a column only some shards have: nulls here
        if col not in frame.columns:
            frame = frame.with_columns(pl.lit(None).alias(col))
    with parquet_file(ref.sidecar, storage_options) as pf:
        tokens = pf.read(columns=[N_TOKENS]).column(0).to_numpy().astype(np.int64)
    if len(tokens) != ref.rows or frame.height != ref.rows:
        raise PoolError(f"{ref.uri}: {ref.rows} rows but {len(tokens)} token counts in {ref.sidecar}")
    return ShardData(frame, tokens, assign_groups(view.spec, frame))


@dataclass
class Copies:
    key: np.ndarray  # float64, smallest taken first
    tokens: np.ndarray
    row: np.ndarray  # row within the shard
    copy: np.ndarray  # copy number of that row in the pass


def copies(view: PoolView, data: ShardData, shard_index: int, phase: str, gi: int) -> Copies:
    """The group's copies in this shard with their keys for `phase` (same on every call)."""
    group = view.spec.groups[gi]
    rows = np.flatnonzero(data.group == gi)
    reps = group.sampling.copies_in_pass(data.frame, rows)
    n = int(reps.sum())
    member = np.repeat(np.arange(len(rows)), reps)
    copy_no = np.arange(n) - np.repeat(np.cumsum(reps) - reps, reps)
    u = rng_for(view.spec.seed, "draw", phase, group.name, f"shard-{shard_index}").random(n)
    key = group.sampling.copy_keys(u, data.frame, data.tokens, rows[member], view.norms.get(group.name))
    return Copies(key, data.tokens[rows][member], rows[member], copy_no)


def bin_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Histogram edges; computed by this one function on both sides so bins agree exactly."""
    return np.linspace(lo, hi, bins + 1)


# ----------------------------------------------------------------------------- planning rounds


def shard_stats(view: PoolView, ref: ShardRef, storage_options=None) -> dict[str, Any]:
    """Per group: documents, tokens, tokens of one (rehydrated) pass, copies, longest document, what
    its sampler needs (a score range); and the rows matching its predicates on their own (all, and
    not excluded), which explain a group left empty."""
    data = load(view, ref, storage_options)
    matched, matched_kept = match_counts(view.spec, data.frame)
    groups = {}
    for gi, group in enumerate(view.spec.groups):
        rows = np.flatnonzero(data.group == gi)
        tok = data.tokens[rows]
        reps = group.sampling.copies_in_pass(data.frame, rows)
        groups[gi] = {
            "docs": len(rows),
            "tokens": int(tok.sum()),
            "pass_tokens": int((tok * reps).sum()),
            "copies": int(reps.sum()),
            "max_tokens": int(tok.max()) if len(rows) else 0,
            "matched": matched[gi],
            "matched_kept": matched_kept[gi],
            **group.sampling.shard_stats(data.frame, data.tokens, rows),
        }
    return {"shards": 1, "docs": ref.rows, "tokens": int(data.tokens.sum()), "groups": groups}


def merge_stats(spec: MixSpec, acc: dict | None, s: dict) -> dict:
    """Fold of shard_stats results (sums, mins and maxes: the same whatever the arrival order); use
    as `functools.partial(merge_stats, spec)`."""
    if acc is None:
        return s
    out = {k: acc[k] + s[k] for k in ("shards", "docs", "tokens")}
    groups = {}
    for gi in acc["groups"]:
        a, b = acc["groups"][gi], s["groups"][gi]
        g = {k: a[k] + b[k] for k in ("docs", "tokens", "pass_tokens", "copies", "matched", "matched_kept")}
        g["max_tokens"] = max(a["max_tokens"], b["max_tokens"])
        groups[gi] = {**g, **spec.groups[gi].sampling.merge_stats(a, b)}
    return {**out, "groups": groups}


def shard_histograms(view: PoolView, ref: ShardRef, requests: Sequence[dict], bins: int, storage_options=None) -> dict:
    """For each request {phase, group, lo, hi}: tokens and copies with key < lo, and token / copy
    histograms over [lo, hi) in `bins` equal bins."""
    data = load(view, ref, storage_options)
    out = {}
    for r in requests:
        c = copies(view, data, ref.index, r["phase"], r["group"])
        b = np.searchsorted(bin_edges(r["lo"], r["hi"], bins), c.key, side="right") - 1
        below, inside = b < 0, (b >= 0) & (b < bins)
        out[r["id"]] = {
            "below_tokens": int(c.tokens[below].sum()),
            "below_copies": int(below.sum()),
            "tokens": np.bincount(b[inside], weights=c.tokens[inside], minlength=bins).round().astype(np.int64),
            "copies": np.bincount(b[inside], minlength=bins).astype(np.int64),
        }
    return out


def merge_histograms(acc: dict | None, h: dict) -> dict:
    if acc is None:
        return h
    return {k: {f: acc[k][f] + v[f] for f in v} for k, v in h.items()}


def shard_window(view: PoolView, ref: ShardRef, requests: Sequence[dict], storage_options=None) -> dict:
    """For each request {phase, group, lo, hi}: tokens and copies with key < lo, and the copies with
    lo <= key < hi themselves (key, tokens, row, copy): the rows near a group's threshold."""
    data = load(view, ref, storage_options)
    out = {}
    for r in requests:
        c = copies(view, data, ref.index, r["phase"], r["group"])
        below = c.key < r["lo"]
        inside = ~below & (c.key < r["hi"])
        out[r["id"]] = {
            "below_tokens": int(c.tokens[below].sum()),
            "below_copies": int(below.sum()),
            "shard": ref.index,
            "key": c.key[inside],
            "tokens": c.tokens[inside],
            "row": c.row[inside].astype(np.int64),
            "copy": c.copy[inside].astype(np.int64),
        }
    return out


# ----------------------------------------------------------------------------- the draw


def taken(c: Copies, shard_index: int, sel: dict) -> np.ndarray:
    """Which copies the partial pass takes: those before the cut in (key, shard, row, copy) order,
    plus the gap fillers named by the driver."""
    ck, cs, cr, cc = sel["cut"]
    before = (c.key < ck) | (
        (c.key == ck) & ((shard_index < cs) | ((shard_index == cs) & ((c.row < cr) | ((c.row == cr) & (c.copy < cc)))))
    )
    extra = sel["extras"].get(shard_index)
    if extra is not None and len(extra):
        width = int(c.copy.max()) + 1 if len(c.copy) else 1
        before |= np.isin(c.row * width + c.copy, extra[:, 0] * width + extra[:, 1])
    return before


def draw_counts(
    view: PoolView, data: ShardData, shard_index: int, phase: str, selections: Mapping[int, dict]
) -> np.ndarray:
    """How many times each row of the shard is taken in `phase` (0 for rows not taken)."""
    counts = np.zeros(len(data.tokens), np.int64)
    for gi, sel in selections.items():
        group = view.spec.groups[gi]
        rows = np.flatnonzero(data.group == gi)
        if sel["full"]:
            counts[rows] += sel["full"] * group.sampling.copies_in_pass(data.frame, rows)
        if sel["cut"] is not None:
            c = copies(view, data, shard_index, phase, gi)
            counts += np.bincount(c.row[taken(c, shard_index, sel)], minlength=len(counts))
    return counts


@dataclass(frozen=True)
class DrawJob:
    ref: ShardRef
    view: PoolView
    phases: tuple[dict, ...]  # {name, file_offset, n_files, selections: {group index: selection}}
    files_per_bucket: int
    schema: pa.Schema  # output schema
    scratch: str


def drawn_rows(job: DrawJob, data: ShardData) -> dict[str, np.ndarray]:
    """Every row drawn from this shard in every phase (repeats included) with its output file and
    shuffle key; plus per (phase, group) realised figures."""
    parts, stats = [], {}
    for ph in job.phases:
        counts = draw_counts(job.view, data, job.ref.index, ph["name"], ph["selections"])
        for gi in ph["selections"]:
            member = data.group == gi
            cg = counts[member]
            stats[f"{ph['name']}/{gi}"] = {
                "tokens": int((cg * data.tokens[member]).sum()),
                "docs": int(cg.sum()),
                "unique_docs": int((cg > 0).sum()),
                "max_doc_repeats": int(cg.max()) if len(cg) else 0,
            }
        n = int(counts.sum())
        if not n:
            continue
        row = np.repeat(np.arange(len(counts)), counts)
        rep = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        # global shuffle: a uniform key per drawn row; a phase's files are equal slices of the key
        # range, each sorted by the key, so any shard can place its rows without the others
        shuffle = rng_for(job.view.spec.seed, "shuffle", ph["name"], f"shard-{job.ref.index}").random(n)
        part = np.minimum((shuffle * ph["n_files"]).astype(np.int64), ph["n_files"] - 1)
        parts.append(
            {
                "row": row,
                "rep": rep,
                "shuffle": shuffle,
                "file": ph["file_offset"] + part,
                "group": data.group[row].astype(np.int64),
            }
        )
    if not parts:
        empty = np.zeros(0, np.int64)
        return {"row": empty, "rep": empty, "shuffle": np.zeros(0), "file": empty, "group": empty, "stats": stats}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} | {"stats": stats}


def scatter(job: DrawJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Draw this shard's rows and write them, with their text, into one scratch piece per bucket
    of output files (one row group per output file inside a piece); returns the buckets written
    and the realised figures per (phase, group)."""
    data = load(job.view, job.ref, storage_options)
    d = drawn_rows(job, data)
    # a pool's own lineage columns (a mixture used as a pool) are not read: the gather writes this draw's
    base_fields = [f for f in job.schema if f.name not in (N_TOKENS, MIX_GROUP, S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY)]
    by_row = np.lexsort((d["rep"], d["row"]))  # read in pool row order
    rows_sorted = d["row"][by_row]
    pieces_by_rg: list[pa.Table] = []
    if len(rows_sorted):
        with parquet_file(job.ref.uri, storage_options) as pf:
            columns = [c for c in pf.schema_arrow.names if c in {fl.name for fl in base_fields}]
            starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)])
            bounds = np.searchsorted(rows_sorted, starts)
            for rg in range(pf.metadata.num_row_groups):
                lo, hi = bounds[rg], bounds[rg + 1]
                if lo < hi:
                    table = pf.read_row_group(rg, columns=columns, use_threads=False)
                    pieces_by_rg.append(table.take(pa.array(rows_sorted[lo:hi] - starts[rg])))
    table = (
        pa.concat_tables(pieces_by_rg, promote_options="permissive")
        if pieces_by_rg
        else pa.schema(base_fields).empty_table()
    )
    table = S.align_to_schema(table, pa.schema(base_fields))
    # into (file, shuffle key) order
    order = np.lexsort((d["rep"], d["row"], d["shuffle"], d["file"]))
    position = np.empty(len(by_row), np.int64)
    position[by_row] = np.arange(len(by_row))
    table = table.take(pa.array(position[order]))
    names = np.array([g.name for g in job.view.spec.groups], dtype=object)
    cols = {k: d[k][order] for k in ("row", "rep", "shuffle", "file", "group")}
    table = (
        table.append_column(N_TOKENS, pa.array(data.tokens[cols["row"]], pa.int64()))
        .append_column(MIX_GROUP, pa.array(names[cols["group"]] if len(order) else [], pa.string()))
        .append_column(FILE, pa.array(cols["file"], pa.int64()))
        .append_column(SHUFFLE, pa.array(cols["shuffle"], pa.float64()))
        .append_column(SHARD, pa.array(np.full(len(order), job.ref.index), pa.int64()))
        .append_column(ROW, pa.array(cols["row"], pa.int64()))
        .append_column(REP, pa.array(cols["rep"], pa.int64()))
    )
    buckets = cols["file"] // job.files_per_bucket
    written = []
    edges = np.flatnonzero(np.diff(buckets)) + 1
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(buckets)]) if len(buckets) else ():
        bucket = int(buckets[lo])
        files = cols["file"][lo:hi]
        buf = io.BytesIO()
        piece = table.slice(lo, hi - lo)
        with pq.ParquetWriter(buf, piece.schema, compression=SCRATCH_COMPRESSION) as writer:
            fedges = np.flatnonzero(np.diff(files)) + 1
            for a, b in zip(np.r_[0, fedges], np.r_[fedges, len(files)]):  # one output file per row group
                writer.write_table(piece.slice(a, b - a), row_group_size=max(1, b - a))
        storage.write_bytes(piece_uri(job.scratch, bucket, job.ref.index), buf.getvalue(), storage_options)
        written.append(bucket)
    return {"shard": job.ref.index, "rows": int(len(order)), "buckets": written, "stats": d["stats"]}


def piece_uri(scratch: str, bucket: int, shard_index: int) -> str:
    return storage.join(scratch, f"bucket-{bucket:05d}", f"from-{shard_index:05d}.parquet")
