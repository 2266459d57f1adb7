"""Writing a planned mixture: scatter (per pool shard) then gather (per output shard).

Scatter reads one pool shard once, row group by row group, takes the rows the plan drew from it
(repeats included), and writes them to one small file per output shard it contributes to, under a
scratch prefix unique to the build. Gather concatenates an output shard's pieces, restores the
planned (globally shuffled) order and writes the final shard. Text is read only here, only for
the row groups that hold drawn rows, and no step holds more than one pool shard's drawn rows or
one output shard.

Output shards are byte-identical for the same plan: fixed schema, fixed row order, fixed row
group size, no timestamps.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.mixtures.pool import MIX_GROUP, N_TOKENS

DEST, POS = "_dest", "_pos"
COMPRESSION = "zstd"
SCRATCH_COMPRESSION = "lz4"


@dataclass(frozen=True)
class ScatterJob:
    shard_index: int
    shard_uri: str
    rows: np.ndarray  # pool rows drawn (sorted; repeated rows appear repeatedly)
    n_tokens: np.ndarray
    file: np.ndarray  # output file index of each drawn row
    pos: np.ndarray  # position of each drawn row within its phase's shuffled order
    group: np.ndarray  # group index of each drawn row
    group_names: tuple[str, ...]
    schema: pa.Schema  # output schema (without the scatter columns)
    scratch: str  # prefix for the pieces

    def piece_uri(self, file_index: int) -> str:
        return piece_uri(self.scratch, file_index, self.shard_index)


def piece_uri(scratch: str, file_index: int, shard_index: int) -> str:
    return storage.join(scratch, f"file-{file_index:05d}", f"from-{shard_index:05d}.parquet")


@dataclass(frozen=True)
class GatherJob:
    file_index: int
    uri: str  # final shard
    pieces: tuple[str, ...]
    schema: pa.Schema
    row_group_rows: int


def parquet_bytes(table: pa.Table, row_group_rows: int, compression: str = COMPRESSION) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, row_group_size=max(1, row_group_rows))
    return buf.getvalue()


def scatter(job: ScatterJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write this pool shard's drawn rows into per-output-file pieces; returns {file index: piece URI}."""
    fs, path = storage.filesystem(job.shard_uri, storage_options)
    base_fields = [f for f in job.schema if f.name not in (N_TOKENS, MIX_GROUP)]
    pieces_by_rg: list[pa.Table] = []
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        columns = [c for c in pf.schema_arrow.names if c in {fl.name for fl in base_fields}]
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)])
        bounds = np.searchsorted(job.rows, starts)
        for rg in range(pf.metadata.num_row_groups):
            lo, hi = bounds[rg], bounds[rg + 1]
            if lo == hi:
                continue
            table = pf.read_row_group(rg, columns=columns, use_threads=False)
            pieces_by_rg.append(table.take(pa.array(job.rows[lo:hi] - starts[rg])))
    table = pa.concat_tables(pieces_by_rg, promote_options="permissive") if pieces_by_rg else pa.schema(base_fields).empty_table()
    table = S.align_to_schema(table, pa.schema(base_fields))
    names = np.array(job.group_names, dtype=object)
    table = (table.append_column(N_TOKENS, pa.array(job.n_tokens, pa.int64()))
             .append_column(MIX_GROUP, pa.array(names[job.group], pa.string()))
             .append_column(DEST, pa.array(job.file, pa.int32()))
             .append_column(POS, pa.array(job.pos, pa.int64())))
    order = np.argsort(job.file, kind="stable")
    files = job.file[order]
    table = table.take(pa.array(order))
    written = {}
    edges = np.flatnonzero(np.diff(files)) + 1
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(files)]):
        file_index = int(files[lo])
        uri = job.piece_uri(file_index)
        # scratch pieces live seconds: fast compression, not small files
        storage.write_bytes(uri, parquet_bytes(table.slice(lo, hi - lo), 1 << 20, SCRATCH_COMPRESSION), storage_options)
        written[file_index] = uri
    return {"shard": job.shard_index, "rows": int(len(job.rows)), "pieces": written}


def gather(job: GatherJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble one output shard from its pieces in planned order; returns its manifest entry."""
    tables = []
    for uri in job.pieces:
        fs, path = storage.filesystem(uri, storage_options)
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f, use_threads=False))
    table = pa.concat_tables(tables) if tables else job.schema.empty_table()
    pos = table.column(POS).to_numpy()
    table = table.take(pa.array(np.argsort(pos, kind="stable"))).drop_columns([DEST, POS])
    table = S.align_to_schema(table, job.schema).combine_chunks()
    data = parquet_bytes(table, job.row_group_rows)
    storage.write_bytes(job.uri, data, storage_options)
    return {"file_index": job.file_index, "uri": job.uri, "rows": table.num_rows,
            "tokens": int(pc.sum(table.column(N_TOKENS)).as_py() or 0),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def remove_scratch(scratch: str, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = storage.filesystem(scratch, storage_options)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def gather_jobs(file_uris: Sequence[str], scatter_results: Sequence[dict], schema: pa.Schema, row_group_rows: int) -> list[GatherJob]:
    """One gather job per output file, its pieces in pool-shard order (deterministic)."""
    pieces: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(file_uris))}
    for result in scatter_results:
        for file_index, uri in result["pieces"].items():
            pieces[int(file_index)].append((result["shard"], uri))
    return [GatherJob(i, uri, tuple(u for _, u in sorted(pieces[i])), schema, row_group_rows) for i, uri in enumerate(file_uris)]
