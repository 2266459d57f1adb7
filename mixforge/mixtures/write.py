"""Writing a planned mixture: scatter (per pool shard) then gather (per bucket of output files).

Scatter (shard_steps.scatter) draws one pool shard's rows, reads their text (only the row groups
that hold drawn rows) and writes them into one scratch piece per *bucket* of output files, one row
group per output file. A bucket is a run of consecutive output files; there are at most
`MAX_BUCKETS`, so a build writes at most pool shards x MAX_BUCKETS pieces however many output files
it has. Gather takes one bucket: for each of its output files it reads that file's row group from
every piece, sorts the rows by their shuffle key (ties: shard, row, repeat) and writes the shard.
No step holds more than one pool shard's drawn rows or one output shard.

Every row keeps its lineage (mixforge.mixture/3): `pool_shard` (its pool shard, an index into the
manifest's `pool.shards`), `pool_row` (its row there) and `pool_copy` (which copy of that document
it is in the phase, 0..k-1), the last columns of a data file. A takedown carries them unchanged.

Output shards are byte-identical for the same plan: fixed schema, fixed row order, fixed row
group size, no timestamps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge import shards, storage
from mixforge.mixtures.shard_steps import FILE, REP, ROW, SHARD, SHUFFLE
from mixforge.schema import N_TOKENS, POOL_COPY, POOL_ROW, POOL_SHARD

COMPRESSION = "zstd"
MAX_BUCKETS = 64
HELPERS = (FILE, SHUFFLE, SHARD, ROW, REP)
# the helper columns kept as lineage columns, and their types in a data file
LINEAGE = ((SHARD, POOL_SHARD, pa.int32()), (ROW, POOL_ROW, pa.int64()), (REP, POOL_COPY, pa.int32()))
LINEAGE_COLUMNS = tuple(name for _, name, _ in LINEAGE)


@dataclass(frozen=True)
class GatherJob:
    bucket: int
    files: tuple[tuple[int, str], ...]  # (global file index, final shard URI)
    pieces: tuple[str, ...]  # this bucket's piece from every pool shard that drew rows for it
    schema: pa.Schema
    row_group_rows: int


def with_lineage(schema: pa.Schema) -> pa.Schema:
    """A data file's schema: `schema` (the pool's columns, n_tokens, mix_group) then the lineage columns
    (a pool that is itself a mixture has them already: they describe the pool's pool, so they are replaced)."""
    fields = [f for f in schema if f.name not in LINEAGE_COLUMNS]
    return pa.schema(fields + [pa.field(name, type_) for _, name, type_ in LINEAGE])


def files_per_bucket(n_files: int, max_buckets: int = MAX_BUCKETS) -> int:
    return max(1, -(-n_files // max_buckets))


def parquet_bytes(table: pa.Table, row_group_rows: int, compression: str = COMPRESSION) -> bytes:
    """A mixture data file's bytes: `row_group_rows` rows a row group (at least 1)."""
    return shards.parquet_bytes(table, compression=compression, row_group_size=max(1, row_group_rows))


def gather(job: GatherJob, storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Assemble the bucket's output shards in planned order; returns their manifest entries."""
    # which row groups of which piece hold which output file: the `_file` column's statistics
    where: dict[int, list[tuple[str, list[int]]]] = {}
    for uri in job.pieces:
        with shards.parquet_file(uri, storage_options) as pf:
            meta = pf.metadata
        col = meta.schema.names.index(FILE)
        by_file: dict[int, list[int]] = {}
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics
            if st is None or st.min != st.max:
                raise RuntimeError(f"{uri}: row group {rg} does not hold exactly one output file")
            by_file.setdefault(int(st.min), []).append(rg)
        for file_index, rgs in by_file.items():
            where.setdefault(file_index, []).append((uri, rgs))
    out = []
    schema = with_lineage(job.schema)
    for file_index, uri in job.files:
        tables = []
        for piece, rgs in where.get(file_index, []):
            with shards.parquet_file(piece, storage_options) as pf:
                tables.append(pf.read_row_groups(rgs, use_threads=False))
        if tables:
            table = pa.concat_tables(tables)
            order = np.lexsort([table.column(c).to_numpy() for c in (REP, ROW, SHARD, SHUFFLE)])
            table = table.take(pa.array(order))
            for helper, name, type_ in LINEAGE:
                table = table.append_column(name, table.column(helper).cast(type_))
            table = table.drop_columns(list(HELPERS))
        else:
            table = schema.empty_table()
        table = S.align_to_schema(table, schema).combine_chunks()
        data = parquet_bytes(table, job.row_group_rows)
        storage.write_bytes(uri, data, storage_options)
        out.append(
            {
                "file_index": file_index,
                "uri": uri,
                "rows": table.num_rows,
                "tokens": int(pc.sum(table.column(N_TOKENS)).as_py() or 0),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return out


def remove_scratch(scratch: str, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = storage.filesystem(scratch, storage_options)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass
