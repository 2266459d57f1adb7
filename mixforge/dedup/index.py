"""The pool's persistent dedup index: its settings, and a run's documents appended as one segment.

A run claims a segment number (create-only, reused on resume), writes its kept documents' node,
signature and band rows under index keys (`keys.index_keys`), then commits the segment with a
marker written last: from then on, runs deduplicate against it. Settings that make signatures
comparable are fixed when the index is created; a run with other settings is refused.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from mixforge import storage
from mixforge.dedup.config import DedupConfig
from mixforge.dedup.keys import MAX_SEGMENTS, index_keys, key_row
from mixforge.dedup.layouts import (
    BUCKET_SCHEMA,
    DedupLayout,
    IndexLayout,
    write_signatures,
    write_table,
)
from mixforge.dedup.run import DedupRun
from mixforge.shards import read_parquet


def settings_fingerprint(cfg: DedupConfig) -> dict:
    """What must match for index and run signatures/hashes to be comparable."""
    return {
        "partitions": cfg.partitions,
        "exact": cfg.exact.model_dump(mode="json"),
        "minhash": cfg.minhash.model_dump(mode="json", exclude={"threshold", "verify", "verify_margin"}),
    }


def check_index(index: IndexLayout, cfg: DedupConfig, storage_options=None) -> list[int]:
    """Create the index settings on first use, refuse a mismatch; returns the committed segments."""
    if cfg.partitions is None:
        raise ValueError("check_index needs resolved partitions (resolve_partitions)")
    wanted = settings_fingerprint(cfg)
    settings = json.dumps(wanted, indent=2, sort_keys=True).encode()
    if not storage.create_only(index.settings, settings, storage_options):
        have = storage.read_json(index.settings, storage_options)
        if have != wanted:
            raise ValueError(
                f"dedup index {index.uri} was built with other settings ({_diff(have, wanted)}); "
                "use a new index, or the settings it was built with"
            )
    return index.segments(storage_options)


def _diff(a: dict, b: dict) -> str:
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def claim_segment(run: DedupRun, run_id: str) -> int:
    """This run's segment number in the index: claimed once (create-only), reused on resume."""
    index, storage_options = run.index, run.storage_options
    mine = run.work.index_segment
    if storage.exists(mine, storage_options):
        return int(storage.read_json(mine, storage_options)["segment"])
    fs, path = storage.filesystem(storage.join(index.uri, "segments"), storage_options)
    try:
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        names = []
    seg = storage.create_next(  # another run may claim a number first: then the next one
        max((int(n[2:8]) for n in names if n.startswith("s-")), default=0) + 1,
        index.claim,
        lambda _: run_id.encode(),
        storage_options,
        MAX_SEGMENTS,
        what=f"a segment of dedup index {index.uri}",
    )
    if seg >= MAX_SEGMENTS:
        raise ValueError(f"dedup index {index.uri} is full ({MAX_SEGMENTS} segments)")
    storage.write_json(mine, {"segment": seg}, storage_options)
    return seg


def _removed_rows(layout: DedupLayout, shard: int, storage_options) -> np.ndarray:
    assign = read_parquet(layout.assignment(shard), storage_options, columns=["row", "is_kept"])
    return assign.column("row").to_numpy()[~assign.column("is_kept").to_numpy()]


def index_shard(run: DedupRun, seg: int, shard: int) -> dict:
    """Node keys and signatures of the shard's kept documents, under their index keys."""
    layout, index, storage_options = run.work, run.index, run.storage_options
    removed = _removed_rows(layout, shard, storage_options)
    nodes = read_parquet(layout.nodes(shard), storage_options)
    keep = ~np.isin(key_row(nodes.column("doc").to_numpy()), removed)
    nodes = nodes.filter(pa.array(keep))
    nodes = nodes.set_column(0, "doc", pa.array(index_keys(seg, nodes.column("doc").to_numpy())))
    write_table(index.nodes(seg, shard), nodes, storage_options)
    if storage.exists(layout.signatures(shard), storage_options):
        sigs = read_parquet(layout.signatures(shard), storage_options)
        sigs = sigs.filter(pa.array(~np.isin(key_row(sigs.column("doc").to_numpy()), removed)))
        sigs = sigs.set_column(0, "doc", pa.array(index_keys(seg, sigs.column("doc").to_numpy())))
        write_signatures(index.signatures(seg, shard), sigs, storage_options)
    return {"shard": shard, "docs": nodes.num_rows}


def index_partition(run: DedupRun, seg: int, partition: int) -> dict:
    """Band rows of one partition for the run's kept documents, under their index keys."""
    layout, storage_options = run.work, run.storage_options
    parts = []
    for shard in run.shards:
        rows = read_parquet(layout.buckets(partition, shard), storage_options)
        doc = rows.column("doc").to_numpy()
        rows = rows.filter(pa.array(~np.isin(key_row(doc), _removed_rows(layout, shard, storage_options))))
        parts.append(rows.set_column(2, "doc", pa.array(index_keys(seg, rows.column("doc").to_numpy()))))
    table = pa.concat_tables(parts) if parts else BUCKET_SCHEMA.empty_table()
    write_table(run.index.buckets(partition, seg), table, storage_options)
    return {"partition": partition, "rows": table.num_rows}


def commit_segment(run: DedupRun, seg: int, run_id: str, docs: int) -> None:
    """Written last: from now on, runs deduplicate against this segment."""
    storage.write_json(run.index.committed(seg), {"segment": seg, "run_id": run_id, "docs": docs}, run.storage_options)
