"""Corpus-scale dedup as plain per-shard and per-partition steps (`composite.run_dedup` maps them on an executor).

    1. signatures (per shard)   -> band buckets partitioned by band_hash % P, node keys, signatures
    2. edges (per partition)    -> candidate pairs sharing an LSH band or an exact hash, written
                                   partitioned by the shard that owns them (`edge_owner`)
    3. verify (per shard)       -> its own edges whose estimated Jaccard passes (optional)
    4. clusters (one step)      -> connected components over edges only, one keeper per cluster,
                                   assignments written per shard
    5. apply (per shard, stage) -> kept rows get dup_cluster/dup_count, the rest go to _removed

No step holds all documents or all signatures: steps 1 and 5 see one shard, step 3 one shard's
edges and signatures plus its partners' signature rows (one file at a time), step 2 one
partition of band rows, step 4 only edges and the ids of documents that have a duplicate. The
driver holds none of these: every hand-over goes through the store. Every output is written
atomically and doubles as the step's completion marker (multi-file outputs get a marker
written last), so a retried step overwrites, never double-counts.

Document keys are (shard index << 32) | row index within the shard (uint64).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.dedup.boilerplate import boilerplate_hashes, count_line_docs, line_hashes, merge_line_counts, remove_lines
from mixforge.dedup.clusters import candidate_edges, choose_keepers, connected_components
from mixforge.dedup.config import DedupConfig
from mixforge.dedup.hashing import exact_hashes
from mixforge.dedup.minhash import MinHasher, estimated_jaccard
from mixforge.shards import read_documents
from mixforge.stage import ShardContext, Stage, StageResult

EXACT_BAND = np.uint16(0xFFFF)  # bucket rows of the exact hash share the LSH shuffle
DUP_CLUSTER, DUP_COUNT, DUPLICATE_OF = "dup_cluster", "dup_count", "duplicate_of"

BUCKET_SCHEMA = pa.schema([("band", pa.uint16()), ("band_hash", pa.uint64()), ("doc", pa.uint64())])
EDGE_SCHEMA = pa.schema([("src", pa.uint64()), ("dst", pa.uint64()), ("exact", pa.bool_())])
ASSIGN_SCHEMA = pa.schema([("row", pa.uint32()), ("dup_cluster", pa.string()), ("dup_count", pa.int64()),
                           ("is_kept", pa.bool_()), ("duplicate_of", pa.string()), ("reason", pa.string())])


INDEX_FLAG = np.uint64(1 << 63)  # keys of documents already in the pool's index
MAX_INDEX_SHARDS, MAX_INDEX_ROWS, MAX_SEGMENTS = 1 << 16, 1 << 24, 1 << 23


def doc_keys(shard_index: int, first_row: int, n: int) -> np.ndarray:
    return (np.uint64(shard_index) << np.uint64(32)) | np.arange(first_row, first_row + n, dtype=np.uint64)


def key_shard(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) >> np.uint64(32)).astype(np.int64)


def key_row(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def is_index_key(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, np.uint64) & INDEX_FLAG) != 0


def index_keys(segment: int, run_keys: np.ndarray) -> np.ndarray:
    """Run keys (shard << 32 | row) -> index keys (flag | segment << 40 | shard << 24 | row)."""
    shard, row = key_shard(run_keys), key_row(run_keys).astype(np.uint64)
    if len(run_keys) and (shard.max() >= MAX_INDEX_SHARDS or row.max() >= MAX_INDEX_ROWS):
        raise ValueError(f"the dedup index holds at most {MAX_INDEX_SHARDS} shards of {MAX_INDEX_ROWS} rows per run")
    return INDEX_FLAG | (np.uint64(segment) << np.uint64(40)) | (shard.astype(np.uint64) << np.uint64(24)) | row


def key_group(keys: np.ndarray) -> np.ndarray:
    """The file group a key's node and signature rows live in: a run shard, or an index segment's shard."""
    keys = np.asarray(keys, np.uint64)
    return np.where(is_index_key(keys), keys >> np.uint64(24), keys >> np.uint64(32)).astype(np.uint64)


@dataclass(frozen=True)
class DedupLayout:
    """Working files of one dedup run, under `<stage dir>/_work/`."""

    stage_dir: str

    def _p(self, *parts: str) -> str:
        return storage.join(self.stage_dir, "_work", *parts)

    def buckets(self, partition: int, shard: int) -> str:
        return self._p("buckets", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def bucket_dir(self, partition: int) -> str:
        return self._p("buckets", f"p-{partition:04d}")

    def nodes(self, shard: int) -> str:
        return self._p("nodes", f"s-{shard:05d}.parquet")

    def signatures(self, shard: int) -> str:
        return self._p("signatures", f"s-{shard:05d}.parquet")

    def signed(self, shard: int) -> str:
        return self._p("signed", f"s-{shard:05d}.json")

    def edges(self, partition: int, shard: int) -> str:
        """Candidate edges of one partition owned by one shard (`edge_owner`)."""
        return self._p("edges", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def edges_done(self, partition: int) -> str:
        return self._p("edges", f"p-{partition:04d}", "_done.json")

    def verified(self, shard: int) -> str:
        return self._p("verified", f"s-{shard:05d}.parquet")

    def verified_done(self, shard: int) -> str:
        return self._p("verified", f"s-{shard:05d}.json")

    def assignment(self, shard: int) -> str:
        return self._p("assign", f"s-{shard:05d}.parquet")

    @property
    def clustered(self) -> str:
        return self._p("assign", "_clusters.json")

    def line_counts(self, partition: int, shard: int) -> str:
        return self._p("lines", f"p-{partition:04d}", f"s-{shard:05d}.parquet")

    def boilerplate(self, partition: int) -> str:
        return self._p("boilerplate", f"p-{partition:04d}.parquet")


@dataclass(frozen=True)
class IndexLayout:
    """A pool's persistent dedup index: one segment per run that added documents.

        <index>/_index.json                       settings every segment was built with
        <index>/segments/s-000001.json            commit marker of a segment (written last)
        <index>/buckets/p-0003/s-000001.parquet   band rows of the segment's documents, by partition
        <index>/nodes/s-000001/00004.parquet      keys, ids, exact hashes, keep values
        <index>/signatures/s-000001/00004.parquet MinHash signatures (for verification)
    """

    uri: str

    @property
    def settings(self) -> str:
        return storage.join(self.uri, "_index.json")

    def claim(self, seg: int) -> str:
        return storage.join(self.uri, "segments", f"s-{seg:06d}.claim")

    def committed(self, seg: int) -> str:
        return storage.join(self.uri, "segments", f"s-{seg:06d}.json")

    def buckets(self, partition: int, seg: int) -> str:
        return storage.join(self.uri, "buckets", f"p-{partition:04d}", f"s-{seg:06d}.parquet")

    def nodes(self, seg: int, shard: int) -> str:
        return storage.join(self.uri, "nodes", f"s-{seg:06d}", f"{shard:05d}.parquet")

    def signatures(self, seg: int, shard: int) -> str:
        return storage.join(self.uri, "signatures", f"s-{seg:06d}", f"{shard:05d}.parquet")

    def segments(self, storage_options=None) -> list[int]:
        """Committed segments, sorted."""
        return sorted(int(m["segment"]) for m in storage.list_json(storage.join(self.uri, "segments"), storage_options))

    def committed_runs(self, storage_options=None) -> set[str]:
        """Run ids whose documents are in the index (each segment's commit marker names its run)."""
        return {m.get("run_id") for m in storage.list_json(storage.join(self.uri, "segments"), storage_options)}


@dataclass(frozen=True)
class Sources:
    """Where the node and signature rows of any key live: this run's work files or the index."""

    layout: DedupLayout
    index: IndexLayout | None = None

    def _split(self, group: int) -> tuple[int, int] | None:
        if group >= (1 << 39):  # index group: flag | segment << 16 | shard
            return (group >> 16) & (MAX_SEGMENTS - 1), group & (MAX_INDEX_SHARDS - 1)
        return None

    def nodes(self, group: int) -> str:
        seg = self._split(group)
        return self.index.nodes(*seg) if seg else self.layout.nodes(group)

    def signatures(self, group: int) -> str:
        seg = self._split(group)
        return self.index.signatures(*seg) if seg else self.layout.signatures(group)


def settings_fingerprint(cfg: DedupConfig) -> dict:
    """What must match for index and run signatures/hashes to be comparable."""
    return {"partitions": cfg.partitions, "exact": cfg.exact.model_dump(mode="json"),
            "minhash": cfg.minhash.model_dump(mode="json", exclude={"threshold", "verify", "verify_margin"})}


PARTITION_INPUT_BYTES = 64 << 20  # input bytes per shuffle partition when `partitions` is auto
MIN_PARTITIONS, MAX_AUTO_PARTITIONS = 16, 4096


def auto_partitions(input_bytes: int) -> int:
    """Partitions for `input_bytes` of input shards: one per 64 MiB (16 to 4096).

    A partition's band rows grow with the documents behind it, so a fixed count lets the
    edges step's memory grow with the corpus; this keeps it about constant. The count
    changes only speed and memory, never results: a bucket lives in exactly one partition.
    """
    return int(min(MAX_AUTO_PARTITIONS, max(MIN_PARTITIONS, -(-int(input_bytes) // PARTITION_INPUT_BYTES))))


def input_bytes(uris: Sequence[str], storage_options=None) -> int:
    total = 0
    for uri in uris:
        fs, path = storage.filesystem(uri, storage_options)
        total += int(fs.size(path) or 0)
    return total


def resolve_partitions(cfg: DedupConfig, uris: Sequence[str], index: IndexLayout | None = None, storage_options=None) -> DedupConfig:
    """`cfg` with `partitions` set: the explicit value, else an existing index's, else auto from
    the input size. (An explicit value that differs from the index's is refused by `check_index`.)"""
    if cfg.partitions is not None:
        return cfg
    if index is not None and storage.exists(index.settings, storage_options):
        have = storage.read_json(index.settings, storage_options).get("partitions")
        if have:
            return cfg.model_copy(update={"partitions": int(have)})
    return cfg.model_copy(update={"partitions": auto_partitions(input_bytes(uris, storage_options))})


def check_index(index: IndexLayout, cfg: DedupConfig, storage_options=None) -> list[int]:
    """Create the index settings on first use, refuse a mismatch; returns the committed segments."""
    if cfg.partitions is None:
        raise ValueError("check_index needs resolved partitions (resolve_partitions)")
    wanted = settings_fingerprint(cfg)
    if not storage.create_only(index.settings, json.dumps(wanted, indent=2, sort_keys=True).encode(), storage_options):
        have = storage.read_json(index.settings, storage_options)
        if have != wanted:
            raise ValueError(f"dedup index {index.uri} was built with other settings ({_diff(have, wanted)}); "
                             "use a new index, or the settings it was built with")
    return index.segments(storage_options)


def _diff(a: dict, b: dict) -> str:
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


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


def plan_dedup(stage_dir: str, inputs: Sequence[tuple[int, str]], cfg: DedupConfig, batch_rows: int = 8192,
               storage_options: Mapping[str, Any] | None = None) -> DedupRun:
    """The run's shared settings: partitions resolved, the index (if any) created or checked."""
    index = IndexLayout(cfg.index) if cfg.index else None
    cfg = resolve_partitions(cfg, [uri for _, uri in inputs], index, storage_options)
    segments = check_index(index, cfg, storage_options) if index else []
    return DedupRun(DedupLayout(stage_dir), cfg, tuple(i for i, _ in inputs), index, tuple(segments), batch_rows,
                    storage_options)


SIGNATURE_ROW_GROUP = 1024  # rows per row group of signature files: verify reads only the groups it needs


def _write_table(uri: str, table: pa.Table, storage_options, row_group_size: int | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
    storage.write_bytes(uri, buf.getvalue(), storage_options)


def _read_table(uri: str, storage_options, columns: list[str] | None = None) -> pa.Table:
    fs, path = storage.filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def _keep_value(table: pa.Table, cfg: DedupConfig) -> pa.Array:
    rule, column = cfg.keep.rule, cfg.keep.column
    if rule == "longest":
        return pc.utf8_length(table.column(S.TEXT)).cast(pa.float64())
    if rule in ("highest", "earliest"):
        if column not in table.column_names:
            raise KeyError(f"keep rule {rule!r} reads column {column!r}, which the input does not have "
                           f"(columns: {', '.join(table.column_names)})")
        values = table.column(column)
        return values.cast(pa.float64()) if not pa.types.is_timestamp(values.type) else values.cast(pa.int64()).cast(pa.float64())
    return pa.nulls(table.num_rows, pa.float64())


# ---------------------------------------------------------------------------- step 0: boilerplate lines (optional)


def count_shard_lines(run: DedupRun, shard: int, uri: str) -> dict:
    """For every eligible line hash of one shard, the number of its documents holding it (partitioned)."""
    layout, cfg, batch_rows, storage_options = run.work, run.cfg, run.batch_rows, run.storage_options
    parts = []
    for batch in read_documents(uri, batch_rows=batch_rows, columns=[S.TEXT], storage_options=storage_options):
        _, h = line_hashes(batch.column(S.TEXT), cfg.boilerplate)
        parts.append(count_line_docs(h))
    hashes, counts = merge_line_counts(parts)
    part = (hashes % np.uint64(cfg.partitions)).astype(np.int64)
    for p in range(cfg.partitions):
        sel = part == p
        _write_table(layout.line_counts(p, shard), pa.table({"hash": hashes[sel], "docs": counts[sel]}), storage_options)
    return {"shard": shard, "distinct_lines": int(len(hashes))}


def boilerplate_partition(run: DedupRun, partition: int) -> dict:
    """Line hashes of one partition held by at least `min_docs` documents across the run."""
    layout, cfg, storage_options = run.work, run.cfg, run.storage_options
    parts = []
    for s in run.shards:
        t = _read_table(layout.line_counts(partition, s), storage_options)
        parts.append((t.column("hash").to_numpy(), t.column("docs").to_numpy()))
    hashes, counts = merge_line_counts(parts)
    found = boilerplate_hashes(hashes, counts, cfg.boilerplate)
    _write_table(layout.boilerplate(partition), pa.table({"hash": found}), storage_options)
    return {"partition": partition, "boilerplate_lines": int(len(found))}


def read_boilerplate(run: DedupRun) -> np.ndarray:
    """The run's boilerplate line hashes (sorted): few, by construction (each is in many documents)."""
    found = [_read_table(run.work.boilerplate(p), run.storage_options).column("hash").to_numpy()
             for p in range(run.partitions)]
    return np.sort(np.concatenate(found)) if found else np.zeros(0, np.uint64)


# ---------------------------------------------------------------------------- step 1


def _sign_columns(uri: str, cfg: DedupConfig, storage_options) -> list[str]:
    """The columns signing reads: id, text and the keep rule's column (shards can be wide)."""
    if cfg.keep.rule not in ("highest", "earliest"):
        return [S.ID, S.TEXT]
    fs, path = storage.filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        names = pq.read_schema(f).names
    if cfg.keep.column not in names:
        raise KeyError(f"keep rule {cfg.keep.rule!r} reads column {cfg.keep.column!r}, which {uri} does not have "
                       f"(columns: {', '.join(names)})")
    return [S.ID, S.TEXT] + ([cfg.keep.column] if cfg.keep.column not in (S.ID, S.TEXT) else [])


def sign_shard(run: DedupRun, shard: int, uri: str) -> dict:
    """Signatures, band buckets (partitioned) and node keys of one shard (of the text without
    the run's boilerplate lines, when it has some)."""
    layout, cfg, storage_options, boilerplate = run.work, run.cfg, run.storage_options, run.boilerplate
    if storage.exists(layout.signed(shard), storage_options):
        return storage.read_json(layout.signed(shard), storage_options)
    hasher = MinHasher(cfg.minhash) if cfg.minhash.enabled else None
    buckets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    nodes, sigs = [], []
    row = 0
    for batch in read_documents(uri, batch_rows=run.batch_rows, columns=_sign_columns(uri, cfg, storage_options),
                                storage_options=storage_options):
        n = batch.num_rows
        keys = doc_keys(shard, row, n)
        text = batch.column(S.TEXT)
        if boilerplate is not None and len(boilerplate):
            text, _ = remove_lines(text, boilerplate, cfg.boilerplate)
        exact = exact_hashes(text, cfg.exact)
        nodes.append(pa.table({"doc": keys, "id": batch.column(S.ID), "exact": exact, "value": _keep_value(batch, cfg)}))
        if cfg.exact.enabled:
            nonempty = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False)
            buckets.append((np.full(int(nonempty.sum()), EXACT_BAND, np.uint16), exact[nonempty], keys[nonempty]))
        if hasher is not None:
            sig = hasher.signatures(text)
            band, band_hash, doc = hasher.bucket_entries(sig, keys)
            buckets.append((band.astype(np.uint16), band_hash, doc))
            if cfg.minhash.verify:
                sigs.append(pa.table({"doc": keys, "sig": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(sig.shape[1] * 8), n, [None, pa.py_buffer(np.ascontiguousarray(sig).tobytes())])}))
        row += n
    band = np.concatenate([b[0] for b in buckets]) if buckets else np.zeros(0, np.uint16)
    band_hash = np.concatenate([b[1] for b in buckets]) if buckets else np.zeros(0, np.uint64)
    doc = np.concatenate([b[2] for b in buckets]) if buckets else np.zeros(0, np.uint64)
    part = (band_hash % np.uint64(cfg.partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(cfg.partitions + 1))
    for p in range(cfg.partitions):
        sel = order[bounds[p]:bounds[p + 1]]
        _write_table(layout.buckets(p, shard), pa.table({"band": band[sel], "band_hash": band_hash[sel], "doc": doc[sel]}, schema=BUCKET_SCHEMA), storage_options)
    node_table = pa.concat_tables(nodes) if nodes else pa.table({"doc": pa.array([], pa.uint64()), "id": pa.array([], pa.string()),
                                                                 "exact": pa.array([], pa.uint64()), "value": pa.array([], pa.float64())})
    _write_table(layout.nodes(shard), node_table, storage_options)
    if sigs:
        _write_table(layout.signatures(shard), pa.concat_tables(sigs), storage_options, SIGNATURE_ROW_GROUP)
    stats = {"shard": shard, "docs": row, "bucket_rows": int(len(doc))}
    storage.write_json(layout.signed(shard), stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 2


def partition_edges(run: DedupRun, partition: int) -> dict:
    """Candidate pairs of one partition: documents sharing a band bucket or an exact hash.

    Written as one file per owner shard (`edge_owner`), so each verify task reads only the
    edges it owns and no process (the driver included) ever gathers all of them. With an
    index, its segments' band rows of this partition join in; pairs of two indexed documents
    are left out (they were settled when indexed). The `_done.json` marker goes last.
    """
    layout, shards, storage_options = run.work, run.shards, run.storage_options
    done = layout.edges_done(partition)
    if storage.exists(done, storage_options):
        return storage.read_json(done, storage_options)
    tables = [_read_table(layout.buckets(partition, s), storage_options) for s in shards]
    tables += [_read_table(run.index.buckets(partition, g), storage_options) for g in run.segments]
    rows = pa.concat_tables(tables) if tables else BUCKET_SCHEMA.empty_table()
    band = rows.column("band").to_numpy()
    band_hash = rows.column("band_hash").to_numpy()
    doc = rows.column("doc").to_numpy()
    del rows, tables
    is_exact = band == EXACT_BAND
    src_e, dst_e = candidate_edges(band[is_exact], band_hash[is_exact], doc[is_exact])
    src_m, dst_m = candidate_edges(band[~is_exact], band_hash[~is_exact], doc[~is_exact])
    src, dst = np.concatenate([src_e, src_m]), np.concatenate([dst_e, dst_m])
    exact = np.concatenate([np.ones(len(src_e), bool), np.zeros(len(src_m), bool)])
    new = ~(is_index_key(src) & is_index_key(dst))
    src, dst, exact = src[new], dst[new], exact[new]
    owner = edge_owner(src, dst)
    order = np.argsort(owner, kind="stable")
    owner_sorted = owner[order]
    strangers = np.setdiff1d(np.unique(owner_sorted), np.asarray(list(shards), np.int64))
    if len(strangers):
        raise ValueError(f"partition {partition}: edges owned by shards outside this run: {strangers[:5].tolist()}")
    for s in shards:  # every owner gets a file, empty or not: a missing file is then an error, never "no edges"
        sel = order[np.searchsorted(owner_sorted, s, "left"):np.searchsorted(owner_sorted, s, "right")]
        _write_table(layout.edges(partition, s), pa.table({"src": src[sel], "dst": dst[sel], "exact": exact[sel]}, schema=EDGE_SCHEMA),
                     storage_options)
    stats = {"partition": partition, "edges": int(len(src)), "fuzzy": int((~exact).sum())}
    storage.write_json(done, stats, storage_options)
    return stats


def edge_owner(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The run shard whose verify task checks each edge.

    Every bucket links its members to its smallest key, so owning edges by `dst` would pile
    most of them on shard 0; `src` spreads them like the documents. An indexed `src` (keys
    above every run key) hands the edge to `dst`, which is always a document of this run.
    """
    src, dst = np.asarray(src, np.uint64), np.asarray(dst, np.uint64)
    return np.where(is_index_key(src), key_shard(dst), key_shard(src))


def shard_edges(run: DedupRun, shard: int) -> pa.Table:
    """The candidate edges `shard` owns, from every partition: unique (src, dst), sorted;
    `exact` is set when any partition found the pair through the exact hash (a pair shares
    buckets in several bands, which may live in different partitions)."""
    t = pa.concat_tables([_read_table(run.work.edges(p, shard), run.storage_options) for p in range(run.partitions)])
    if t.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    src, dst = t.column("src").to_numpy(), t.column("dst").to_numpy()
    exact = t.column("exact").to_numpy(zero_copy_only=False)
    order = np.lexsort((~exact, dst, src))  # the exact copy of a pair first
    src, dst, exact = src[order], dst[order], exact[order]
    first = np.ones(len(src), bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return pa.table({"src": src[first], "dst": dst[first], "exact": exact[first]}, schema=EDGE_SCHEMA)


VERIFY_CHUNK = 32_768  # edges per signature comparison: bounded memory whatever the skew


def _signature_rows(uri: str, wanted: np.ndarray, storage_options) -> tuple[np.ndarray, np.ndarray]:
    """(keys ascending, signatures) of the `wanted` (sorted) documents of one signature file.

    Reads only the row groups whose key range holds a wanted key: a shard's edges usually
    need a few partners from each other shard, not all of its signatures."""
    fs, path = storage.filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        t = pf.read_row_groups(_row_groups_holding(pf.metadata, wanted), columns=["doc", "sig"])
    doc = t.column("doc").to_numpy()
    mask = np.isin(doc, wanted)
    raw = t.column("sig").combine_chunks().filter(pa.array(mask))
    width = raw.type.byte_width // 8
    sigs = np.frombuffer(raw.buffers()[1], dtype=np.uint64, count=len(raw) * width,
                         offset=raw.offset * raw.type.byte_width).reshape(len(raw), width)
    keys = doc[mask]
    order = np.argsort(keys, kind="stable")  # files are written in key order; this only guards it
    return keys[order], sigs[order]


def _row_groups_holding(meta: pq.FileMetaData, wanted: np.ndarray) -> list[int]:
    """Row groups whose `doc` min/max range contains a wanted key (all groups without statistics)."""
    doc_col = meta.schema.to_arrow_schema().get_field_index("doc")
    groups = []
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(doc_col).statistics
        if st is None or not st.has_min_max:
            groups.append(i)
            continue
        lo, hi = np.uint64(st.min), np.uint64(st.max)
        if np.searchsorted(wanted, lo, "left") < np.searchsorted(wanted, hi, "right"):
            groups.append(i)
    return groups


def _rows(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    i = np.searchsorted(keys, q)
    if len(q) and (np.any(i >= len(keys)) or np.any(keys[np.minimum(i, len(keys) - 1)] != q)):
        raise KeyError("verify: an edge endpoint has no signature (its signature file is incomplete)")
    return i


def verify_shard_edges(run: DedupRun, shard: int) -> dict:
    """Keep the MinHash edges this shard owns whose estimated Jaccard passes
    `minhash.verify_threshold`; exact edges pass as they are.

    One endpoint of every owned edge is a document of this shard (`edge_owner`); the partners'
    signatures are read one file (run shard or index shard) at a time, keeping only the rows
    needed, so memory is about two shards' signatures whatever the corpus size.
    """
    layout, storage_options = run.work, run.storage_options
    done = layout.verified_done(shard)
    if storage.exists(done, storage_options):
        return {**storage.read_json(done, storage_options), "skipped": True}
    sources = Sources(layout, run.index)
    edges = shard_edges(run, shard)
    exact = edges.column("exact").to_numpy(zero_copy_only=False)
    keep = exact.copy()
    fuzzy = np.flatnonzero(~exact)
    if len(fuzzy):
        threshold = run.cfg.minhash.verify_threshold
        src, dst = edges.column("src").to_numpy()[fuzzy], edges.column("dst").to_numpy()[fuzzy]
        ours = ~is_index_key(src)
        local, partner = np.where(ours, src, dst), np.where(ours, dst, src)
        group = key_group(partner)
        own_keys, own_sigs = _signature_rows(sources.signatures(shard), np.unique(np.concatenate([local, partner[group == shard]])),
                                             storage_options)
        ok = np.zeros(len(fuzzy), bool)
        order = np.argsort(group, kind="stable")
        uniq, starts = np.unique(group[order], return_index=True)
        for g, a, b in zip(uniq.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
            sel = order[a:b]
            keys, sigs = (own_keys, own_sigs) if g == shard else _signature_rows(sources.signatures(g), np.unique(partner[sel]), storage_options)
            for i in range(0, len(sel), VERIFY_CHUNK):
                c = sel[i:i + VERIFY_CHUNK]
                ok[c] = estimated_jaccard(own_sigs[_rows(own_keys, local[c])], sigs[_rows(keys, partner[c])]) >= threshold
            del keys, sigs
        keep[fuzzy] = ok
    result = edges.filter(pa.array(keep))
    _write_table(layout.verified(shard), result, storage_options)
    stats = {"shard": shard, "candidates": int(len(fuzzy)), "verified": int(keep[fuzzy].sum()), "exact": int(exact.sum())}
    storage.write_json(done, stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 4


def cluster(run: DedupRun) -> dict:
    """Connected components over the edges, one keeper per cluster, assignments per shard.

    Reads the verified edges of every shard (or, without verification, the candidate edges):
    this step holds all edges and the ids of the documents that have a duplicate -- never
    signatures, never documents without a duplicate. Documents already in the index always
    win their cluster (they are published in the pool).
    """
    layout, cfg, shards, storage_options = run.work, run.cfg, run.shards, run.storage_options
    if storage.exists(layout.clustered, storage_options):
        return storage.read_json(layout.clustered, storage_options)
    parts = [_read_table(layout.verified(s), storage_options) if run.verify else shard_edges(run, s) for s in shards]
    edges = pa.concat_tables(parts) if parts else EDGE_SCHEMA.empty_table()
    n_edges = edges.num_rows
    nodes, roots = connected_components(edges.column("src").to_numpy(), edges.column("dst").to_numpy())
    del parts, edges
    # Ids and keep values of only the documents that have a duplicate, file group by file group.
    # Nodes are sorted, and so are their groups (run shard, then index segment/shard): each group is one slice.
    sources = Sources(layout, run.index)
    groups = key_group(nodes)
    uniq, starts = np.unique(groups, return_index=True)
    bounds = [*starts.tolist(), len(nodes)]
    id_parts, value_parts = [], []
    exact_arr = np.zeros(len(nodes), np.uint64)
    for j, g in enumerate(uniq.tolist()):
        a, b = bounds[j], bounds[j + 1]
        t = _read_table(sources.nodes(g), storage_options)
        pos = np.searchsorted(t.column("doc").to_numpy(), nodes[a:b])  # node files are sorted by key
        id_parts.append(t.column("id").take(pa.array(pos)).combine_chunks())
        value_parts.append(t.column("value").take(pa.array(pos)).combine_chunks().cast(pa.float64()))
        exact_arr[a:b] = t.column("exact").to_numpy()[pos]
    ids_arr = pa.concat_arrays(id_parts) if id_parts else pa.array([], pa.string())
    value_arr = pa.concat_arrays(value_parts) if value_parts else pa.array([], pa.float64())
    rule = cfg.keep.rule
    in_pool = is_index_key(nodes)
    assign = choose_keepers(nodes, roots, rule, None if rule == "smallest_id" else value_arr, ids_arr,
                            prefer=in_pool if in_pool.any() else None)
    kept_pos = np.searchsorted(nodes, assign.kept)
    kept_id = ids_arr.take(pa.array(kept_pos))
    exact_dup = exact_arr == exact_arr[kept_pos]
    node_shard = key_shard(nodes)  # non-decreasing: index keys sort after every run shard
    no_reason = pa.scalar(None, pa.string())
    for s in shards:
        a, b = int(np.searchsorted(node_shard, s, "left")), int(np.searchsorted(node_shard, s, "right"))
        is_kept, cluster_id = pa.array(assign.is_kept[a:b]), kept_id.slice(a, b - a)
        reason = pc.if_else(pa.array(exact_dup[a:b]), "exact_duplicate", "near_duplicate")
        table = pa.table({"row": key_row(nodes[a:b]), "dup_cluster": cluster_id, "dup_count": assign.size[a:b], "is_kept": is_kept,
                          "duplicate_of": pc.if_else(is_kept, no_reason, cluster_id),
                          "reason": pc.if_else(is_kept, no_reason, reason)}, schema=ASSIGN_SCHEMA)
        _write_table(layout.assignment(s), table, storage_options)
    sizes = np.bincount(np.unique(roots, return_counts=True)[1]) if len(roots) else np.zeros(0, np.int64)
    histogram = {str(size): int(count) for size, count in enumerate(sizes) if count}
    stats = {"clusters": int(len(np.unique(roots))), "docs_in_clusters": int(len(nodes)), "edges": int(n_edges),
             "duplicates_of_indexed": int((~assign.is_kept & ~in_pool & is_index_key(assign.kept)).sum()),
             "cluster_size_histogram": histogram, "largest_cluster": int(max(map(int, histogram), default=0))}
    storage.write_json(layout.clustered, stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- index append


def claim_segment(run: DedupRun, run_id: str) -> int:
    """This run's segment number in the index: claimed once (create-only), reused on resume."""
    index, storage_options = run.index, run.storage_options
    mine = storage.join(run.work.stage_dir, "_work", "index_segment.json")
    if storage.exists(mine, storage_options):
        return int(storage.read_json(mine, storage_options)["segment"])
    fs, path = storage.filesystem(storage.join(index.uri, "segments"), storage_options)
    try:
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        names = []
    seg = max((int(n[2:8]) for n in names if n.startswith("s-")), default=0) + 1
    while not storage.create_only(index.claim(seg), run_id.encode(), storage_options):
        seg += 1  # another run claimed it first
    if seg >= MAX_SEGMENTS:
        raise ValueError(f"dedup index {index.uri} is full ({MAX_SEGMENTS} segments)")
    storage.write_json(mine, {"segment": seg}, storage_options)
    return seg


def _removed_rows(layout: DedupLayout, shard: int, storage_options) -> np.ndarray:
    assign = _read_table(layout.assignment(shard), storage_options, columns=["row", "is_kept"])
    return assign.column("row").to_numpy()[~assign.column("is_kept").to_numpy()]


def index_shard(run: DedupRun, seg: int, shard: int) -> dict:
    """Node keys and signatures of the shard's kept documents, under their index keys."""
    layout, index, storage_options = run.work, run.index, run.storage_options
    removed = _removed_rows(layout, shard, storage_options)
    nodes = _read_table(layout.nodes(shard), storage_options)
    keep = ~np.isin(key_row(nodes.column("doc").to_numpy()), removed)
    nodes = nodes.filter(pa.array(keep))
    nodes = nodes.set_column(0, "doc", pa.array(index_keys(seg, nodes.column("doc").to_numpy())))
    _write_table(index.nodes(seg, shard), nodes, storage_options)
    if storage.exists(layout.signatures(shard), storage_options):
        sigs = _read_table(layout.signatures(shard), storage_options)
        sigs = sigs.filter(pa.array(~np.isin(key_row(sigs.column("doc").to_numpy()), removed)))
        sigs = sigs.set_column(0, "doc", pa.array(index_keys(seg, sigs.column("doc").to_numpy())))
        _write_table(index.signatures(seg, shard), sigs, storage_options, SIGNATURE_ROW_GROUP)
    return {"shard": shard, "docs": nodes.num_rows}


def index_partition(run: DedupRun, seg: int, partition: int) -> dict:
    """Band rows of one partition for the run's kept documents, under their index keys."""
    layout, storage_options = run.work, run.storage_options
    parts = []
    for shard in run.shards:
        rows = _read_table(layout.buckets(partition, shard), storage_options)
        doc = rows.column("doc").to_numpy()
        rows = rows.filter(pa.array(~np.isin(key_row(doc), _removed_rows(layout, shard, storage_options))))
        parts.append(rows.set_column(2, "doc", pa.array(index_keys(seg, rows.column("doc").to_numpy()))))
    table = pa.concat_tables(parts) if parts else BUCKET_SCHEMA.empty_table()
    _write_table(run.index.buckets(partition, seg), table, storage_options)
    return {"partition": partition, "rows": table.num_rows}


def commit_segment(run: DedupRun, seg: int, run_id: str, docs: int) -> None:
    """Written last: from now on, runs deduplicate against this segment."""
    storage.write_json(run.index.committed(seg), {"segment": seg, "run_id": run_id, "docs": docs}, run.storage_options)


# ---------------------------------------------------------------------------- step 5


class ApplyDedup(Stage):
    """Per shard: keep one document per cluster with its `dup_cluster` / `dup_count`; drop the rest.

    Documents without a duplicate get `dup_cluster` = their own id and `dup_count` = 1.
    """

    name = "dedup"
    reads = (S.ID,)
    writes = (DUP_CLUSTER, DUP_COUNT)

    def __init__(self, run: DedupRun) -> None:
        self.layout = run.work
        self.storage_options = run.storage_options
        self.boilerplate = run.boilerplate if run.boilerplate is not None and len(run.boilerplate) else None
        self.cfg = run.cfg
        self._loaded: tuple[int, pa.Table] | None = None

    def _assignment(self, shard: int) -> pa.Table:
        if self._loaded is None or self._loaded[0] != shard:
            self._loaded = (shard, _read_table(self.layout.assignment(shard), self.storage_options))
        return self._loaded[1]

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        n = batch.num_rows
        assign = self._assignment(ctx.shard_index)
        rows = assign.column("row").to_numpy().astype(np.int64) - ctx.row_offset
        inside = (rows >= 0) & (rows < n)
        local = rows[inside]
        sub = assign.filter(pa.array(inside))
        cluster = batch.column(S.ID).combine_chunks()
        count = np.ones(n, np.int64)
        mask = np.zeros(n, bool)
        mask[local] = True
        if len(local):
            order = np.argsort(local)
            cluster = pc.replace_with_mask(cluster, pa.array(mask), sub.column("dup_cluster").take(pa.array(order)).combine_chunks())
            count[local] = sub.column("dup_count").to_numpy()
        removed_mask = np.zeros(n, bool)
        removed_mask[local] = ~sub.column("is_kept").to_numpy()
        out = batch
        if self.boilerplate is not None:
            text = batch.column(S.TEXT)
            edited, lines = remove_lines(text, self.boilerplate, self.cfg.boilerplate)
            ctx.count("boilerplate.lines_removed", int(lines.sum()))
            ctx.count("boilerplate.chars_removed", int(pc.sum(pc.utf8_length(text)).as_py() or 0) - int(pc.sum(pc.utf8_length(edited)).as_py() or 0))
            ctx.count("boilerplate.docs_edited", int((lines > 0).sum()))
            out = out.set_column(out.column_names.index(S.TEXT), S.TEXT, edited)
        for name, values in ((DUP_CLUSTER, cluster), (DUP_COUNT, pa.array(count))):
            out = out.set_column(out.column_names.index(name), name, values) if name in out.column_names else out.append_column(name, values)
        if not removed_mask.any():
            return StageResult(out)
        gone = sub.filter(pc.invert(sub.column("is_kept")))  # in row order, like the removed rows
        removed = out.filter(pa.array(removed_mask))
        removed = removed.append_column(DUPLICATE_OF, gone.column("duplicate_of")).append_column(S.DROP_REASON, gone.column("reason"))
        return StageResult(out.filter(pa.array(~removed_mask)), removed)
