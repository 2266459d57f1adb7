"""The dedup steps, plain functions over one unit each (a shard or a partition) and the run's
`DedupRun`; `composite.run_dedup` maps them on an executor:

    0. lines, boilerplate (optional) -> line hashes counted per shard, those in many documents
                                        found per partition (`read_boilerplate` gathers them)
    1. signatures (per shard)   -> band buckets partitioned by band_hash % P, node keys, signatures
    2. edges (per partition)    -> candidate pairs sharing an LSH band or an exact hash, written
                                   partitioned by the shard that owns them (`edge_owner`)
    3. verify (per shard)       -> its own edges whose estimated Jaccard passes (optional)
    4. clusters (one step)      -> connected components over edges only, one keeper per cluster,
                                   assignments written per shard

No step holds all documents or all signatures: step 1 sees one shard, step 3 one shard's edges
and signatures plus its partners' signature rows (one file at a time), step 2 one partition of
band rows, step 4 only edges and the ids of documents that have a duplicate. The driver holds
none of these: every hand-over goes through the store. Every output is written atomically and
doubles as the step's completion marker (multi-file outputs get a marker written last), so a
retried step overwrites, never double-counts. Document keys: `keys`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.dedup.boilerplate import (
    boilerplate_hashes,
    count_line_docs,
    line_hashes,
    merge_line_counts,
    remove_lines,
)
from mixforge.dedup.clusters import candidate_edges, choose_keepers, connected_components
from mixforge.dedup.config import DedupConfig
from mixforge.dedup.keys import doc_keys, is_index_key, key_group, key_row, key_shard
from mixforge.dedup.layouts import (
    ASSIGN_SCHEMA,
    BUCKET_SCHEMA,
    EDGE_SCHEMA,
    Sources,
    write_signatures,
    write_table,
)
from mixforge.dedup.minhash import MinHasher, estimated_jaccard
from mixforge.dedup.run import DedupRun
from mixforge.shards import parquet_file, read_documents, read_parquet

EXACT_BAND = np.uint16(0xFFFF)  # bucket rows of the exact hash share the LSH shuffle


def _keep_value(table: pa.Table, cfg: DedupConfig) -> pa.Array:
    rule, column = cfg.keep.rule, cfg.keep.column
    if rule == "longest":
        return pc.utf8_length(table.column(S.TEXT)).cast(pa.float64())
    if rule in ("highest", "earliest"):
        if column not in table.column_names:
            raise KeyError(
                f"keep rule {rule!r} reads column {column!r}, which the input does not have "
                f"(columns: {', '.join(table.column_names)})"
            )
        values = table.column(column)
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.int64())
        return values.cast(pa.float64())
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
        counted = pa.table({"hash": hashes[sel], "docs": counts[sel]})
        write_table(layout.line_counts(p, shard), counted, storage_options)
    return {"shard": shard, "distinct_lines": int(len(hashes))}


def boilerplate_partition(run: DedupRun, partition: int) -> dict:
    """Line hashes of one partition held by at least `min_docs` documents across the run."""
    layout, cfg, storage_options = run.work, run.cfg, run.storage_options
    parts = []
    for s in run.shards:
        t = read_parquet(layout.line_counts(partition, s), storage_options)
        parts.append((t.column("hash").to_numpy(), t.column("docs").to_numpy()))
    hashes, counts = merge_line_counts(parts)
    found = boilerplate_hashes(hashes, counts, cfg.boilerplate)
    write_table(layout.boilerplate(partition), pa.table({"hash": found}), storage_options)
    return {"partition": partition, "boilerplate_lines": int(len(found))}


def read_boilerplate(run: DedupRun) -> np.ndarray:
    """The run's boilerplate line hashes (sorted): few, by construction (each is in many documents)."""
    found = [
        read_parquet(run.work.boilerplate(p), run.storage_options).column("hash").to_numpy()
        for p in range(run.partitions)
    ]
    return np.sort(np.concatenate(found)) if found else np.zeros(0, np.uint64)


# ---------------------------------------------------------------------------- step 1: signatures (per shard)


def _sign_columns(uri: str, cfg: DedupConfig, storage_options) -> list[str]:
    """The columns signing reads: id, text and the keep rule's column (shards can be wide)."""
    if cfg.keep.rule not in ("highest", "earliest"):
        return [S.ID, S.TEXT]
    with parquet_file(uri, storage_options) as pf:
        names = pf.schema_arrow.names
    if cfg.keep.column not in names:
        raise KeyError(
            f"keep rule {cfg.keep.rule!r} reads column {cfg.keep.column!r}, which {uri} does not have "
            f"(columns: {', '.join(names)})"
        )
    return [S.ID, S.TEXT] + ([cfg.keep.column] if cfg.keep.column not in (S.ID, S.TEXT) else [])


def sign_shard(run: DedupRun, shard: int, uri: str) -> dict:
    """Signatures, band buckets (partitioned) and node keys of one shard (of the text without
    the run's boilerplate lines, when it has some)."""
    layout, cfg, storage_options, boilerplate = run.work, run.cfg, run.storage_options, run.boilerplate
    if storage.exists(layout.signed(shard), storage_options):
        return storage.read_json(layout.signed(shard), storage_options)
    from mixforge.dedup.kernel import sign  # numba: imported by the workers that sign, not by every command

    hasher = MinHasher(cfg.minhash) if cfg.minhash.enabled else None
    buckets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    nodes, sigs = [], []
    row = 0
    for batch in read_documents(
        uri,
        batch_rows=run.batch_rows,
        columns=_sign_columns(uri, cfg, storage_options),
        storage_options=storage_options,
    ):
        n = batch.num_rows
        keys = doc_keys(shard, row, n)
        text = batch.column(S.TEXT)
        if boilerplate is not None and len(boilerplate):
            text, _ = remove_lines(text, boilerplate, cfg.boilerplate)
        sig, exact = sign(text, hasher, cfg.exact)  # one compiled pass: signatures and exact hashes
        nodes.append(
            pa.table({"doc": keys, "id": batch.column(S.ID), "exact": exact, "value": _keep_value(batch, cfg)})
        )
        if cfg.exact.enabled:
            nonempty = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False)
            buckets.append((np.full(int(nonempty.sum()), EXACT_BAND, np.uint16), exact[nonempty], keys[nonempty]))
        if hasher is not None:
            band, band_hash, doc = hasher.bucket_entries(sig, keys)
            buckets.append((band.astype(np.uint16), band_hash, doc))
            if cfg.minhash.verify:
                sigs.append(
                    pa.table(
                        {
                            "doc": keys,
                            "sig": pa.FixedSizeBinaryArray.from_buffers(
                                pa.binary(sig.shape[1] * 8),
                                n,
                                [None, pa.py_buffer(np.ascontiguousarray(sig).tobytes())],
                            ),
                        }
                    )
                )
        row += n
    band = np.concatenate([b[0] for b in buckets]) if buckets else np.zeros(0, np.uint16)
    band_hash = np.concatenate([b[1] for b in buckets]) if buckets else np.zeros(0, np.uint64)
    doc = np.concatenate([b[2] for b in buckets]) if buckets else np.zeros(0, np.uint64)
    part = (band_hash % np.uint64(cfg.partitions)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(cfg.partitions + 1))
    for p in range(cfg.partitions):
        sel = order[bounds[p] : bounds[p + 1]]
        rows = pa.table({"band": band[sel], "band_hash": band_hash[sel], "doc": doc[sel]}, schema=BUCKET_SCHEMA)
        write_table(layout.buckets(p, shard), rows, storage_options)
    node_table = (
        pa.concat_tables(nodes)
        if nodes
        else pa.table(
            {
                "doc": pa.array([], pa.uint64()),
                "id": pa.array([], pa.string()),
                "exact": pa.array([], pa.uint64()),
                "value": pa.array([], pa.float64()),
            }
        )
    )
    write_table(layout.nodes(shard), node_table, storage_options)
    if sigs:
        write_signatures(layout.signatures(shard), pa.concat_tables(sigs), storage_options)
    stats = {"shard": shard, "docs": row, "bucket_rows": int(len(doc))}
    storage.write_json(layout.signed(shard), stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 2: edges (per partition)


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
    tables = [read_parquet(layout.buckets(partition, s), storage_options) for s in shards]
    tables += [read_parquet(run.index.buckets(partition, g), storage_options) for g in run.segments]
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
        sel = order[np.searchsorted(owner_sorted, s, "left") : np.searchsorted(owner_sorted, s, "right")]
        owned = pa.table({"src": src[sel], "dst": dst[sel], "exact": exact[sel]}, schema=EDGE_SCHEMA)
        write_table(layout.edges(partition, s), owned, storage_options)
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
    t = pa.concat_tables([read_parquet(run.work.edges(p, shard), run.storage_options) for p in range(run.partitions)])
    if t.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    src, dst = t.column("src").to_numpy(), t.column("dst").to_numpy()
    exact = t.column("exact").to_numpy(zero_copy_only=False)
    order = np.lexsort((~exact, dst, src))  # the exact copy of a pair first
    src, dst, exact = src[order], dst[order], exact[order]
    first = np.ones(len(src), bool)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    return pa.table({"src": src[first], "dst": dst[first], "exact": exact[first]}, schema=EDGE_SCHEMA)


# ---------------------------------------------------------------------------- step 3: verify (per shard, optional)


VERIFY_CHUNK = 32_768  # edges per signature comparison: bounded memory whatever the skew


def _signature_rows(uri: str, wanted: np.ndarray, storage_options) -> tuple[np.ndarray, np.ndarray]:
    """(keys ascending, signatures) of the `wanted` (sorted) documents of one signature file.

    Reads only the row groups whose key range holds a wanted key: a shard's edges usually
    need a few partners from each other shard, not all of its signatures."""
    with parquet_file(uri, storage_options) as pf:
        t = pf.read_row_groups(_row_groups_holding(pf.metadata, wanted), columns=["doc", "sig"])
    doc = t.column("doc").to_numpy()
    mask = np.isin(doc, wanted)
    raw = t.column("sig").combine_chunks().filter(pa.array(mask))
    width = raw.type.byte_width // 8
    sigs = np.frombuffer(
        raw.buffers()[1], dtype=np.uint64, count=len(raw) * width, offset=raw.offset * raw.type.byte_width
    ).reshape(len(raw), width)
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
        own_wanted = np.unique(np.concatenate([local, partner[group == shard]]))
        own_keys, own_sigs = _signature_rows(sources.signatures(shard), own_wanted, storage_options)
        ok = np.zeros(len(fuzzy), bool)
        order = np.argsort(group, kind="stable")
        uniq, starts = np.unique(group[order], return_index=True)
        for g, a, b in zip(uniq.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
            sel = order[a:b]
            if g == shard:
                keys, sigs = own_keys, own_sigs
            else:
                keys, sigs = _signature_rows(sources.signatures(g), np.unique(partner[sel]), storage_options)
            for i in range(0, len(sel), VERIFY_CHUNK):
                c = sel[i : i + VERIFY_CHUNK]
                estimate = estimated_jaccard(own_sigs[_rows(own_keys, local[c])], sigs[_rows(keys, partner[c])])
                ok[c] = estimate >= threshold
            del keys, sigs
        keep[fuzzy] = ok
    result = edges.filter(pa.array(keep))
    write_table(layout.verified(shard), result, storage_options)
    stats = {
        "shard": shard,
        "candidates": int(len(fuzzy)),
        "verified": int(keep[fuzzy].sum()),
        "exact": int(exact.sum()),
    }
    storage.write_json(done, stats, storage_options)
    return stats


# ---------------------------------------------------------------------------- step 4: clusters (one call)


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
    parts = [read_parquet(layout.verified(s), storage_options) if run.verify else shard_edges(run, s) for s in shards]
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
        t = read_parquet(sources.nodes(g), storage_options)
        pos = np.searchsorted(t.column("doc").to_numpy(), nodes[a:b])  # node files are sorted by key
        id_parts.append(t.column("id").take(pa.array(pos)).combine_chunks())
        value_parts.append(t.column("value").take(pa.array(pos)).combine_chunks().cast(pa.float64()))
        exact_arr[a:b] = t.column("exact").to_numpy()[pos]
    ids_arr = pa.concat_arrays(id_parts) if id_parts else pa.array([], pa.string())
    value_arr = pa.concat_arrays(value_parts) if value_parts else pa.array([], pa.float64())
    rule = cfg.keep.rule
    in_pool = is_index_key(nodes)
    assign = choose_keepers(
        nodes,
        roots,
        rule,
        None if rule == "smallest_id" else value_arr,
        ids_arr,
        prefer=in_pool if in_pool.any() else None,
    )
    kept_pos = np.searchsorted(nodes, assign.kept)
    kept_id = ids_arr.take(pa.array(kept_pos))
    exact_dup = exact_arr == exact_arr[kept_pos]
    node_shard = key_shard(nodes)  # non-decreasing: index keys sort after every run shard
    no_reason = pa.scalar(None, pa.string())
    for s in shards:
        a, b = int(np.searchsorted(node_shard, s, "left")), int(np.searchsorted(node_shard, s, "right"))
        is_kept, cluster_id = pa.array(assign.is_kept[a:b]), kept_id.slice(a, b - a)
        reason = pc.if_else(pa.array(exact_dup[a:b]), "exact_duplicate", "near_duplicate")
        table = pa.table(
            {
                "row": key_row(nodes[a:b]),
                "dup_cluster": cluster_id,
                "dup_count": assign.size[a:b],
                "is_kept": is_kept,
                "duplicate_of": pc.if_else(is_kept, no_reason, cluster_id),
                "reason": pc.if_else(is_kept, no_reason, reason),
            },
            schema=ASSIGN_SCHEMA,
        )
        write_table(layout.assignment(s), table, storage_options)
    sizes = np.bincount(np.unique(roots, return_counts=True)[1]) if len(roots) else np.zeros(0, np.int64)
    histogram = {str(size): int(count) for size, count in enumerate(sizes) if count}
    stats = {
        "clusters": int(len(np.unique(roots))),
        "docs_in_clusters": int(len(nodes)),
        "edges": int(n_edges),
        "duplicates_of_indexed": int((~assign.is_kept & ~in_pool & is_index_key(assign.kept)).sum()),
        "cluster_size_histogram": histogram,
        "largest_cluster": int(max(map(int, histogram), default=0)),
    }
    storage.write_json(layout.clustered, stats, storage_options)
    return stats
