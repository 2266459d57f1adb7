"""The curated pool a mixture samples from: its shards, their fingerprints, and annotation columns.

Planning reads only annotation columns (source, the predicate and sampling columns) and the
cached token counts, one shard at a time (shard_steps.py); text is read only when writing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from mixforge import schema as S
from mixforge import storage
from mixforge.mixtures import tokens as T
from mixforge.mixtures.spec import Exclusions, MixSpec
from mixforge.predicates import columns as where_columns
from mixforge.predicates import compile_where
from mixforge.schema import MIX_GROUP, N_TOKENS
from mixforge.shards import parquet_file

_RUN_ID = re.compile(r"/runs/([^/]+)/")


class PoolError(ValueError):
    pass


@dataclass(frozen=True)
class PoolShard:
    index: int
    uri: str
    rows: int
    bytes: int
    sha256: str
    run_id: str | None
    schema: pa.Schema = field(repr=False, compare=False)

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "hash_of": "size + parquet footer",
            "run_id": self.run_id,
        }


def resolve_pool(patterns: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> list[PoolShard]:
    """Every Parquet shard of the pool (sorted, deduplicated) with its fingerprint and schema."""
    uris: set[str] = set()
    for pattern in patterns:
        for shard in storage.discover_shards(pattern, storage_options):
            if not shard.uri.endswith(".parquet"):
                raise PoolError(
                    f"pool shard {shard.uri} is not Parquet: a mixture samples a curated pool (contract Parquet)"
                )
            uris.add(shard.uri)
    if not uris:
        raise PoolError(f"no pool shards found at {list(patterns)}")

    def describe(item: tuple[int, str]) -> PoolShard:
        index, uri = item
        fp = T.shard_fingerprint(uri, storage_options)
        with parquet_file(uri, storage_options) as pf:
            schema = pf.schema_arrow
        match = _RUN_ID.search(uri)
        return PoolShard(index, uri, fp["rows"], fp["bytes"], fp["sha256"], match.group(1) if match else None, schema)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(describe, enumerate(sorted(uris))))


def output_schema(shards: Sequence[PoolShard]) -> pa.Schema:
    """Schema of mixture shards: the pool's columns (unified), then n_tokens and mix_group."""
    unified = pa.unify_schemas([s.schema.remove_metadata() for s in shards], promote_options="permissive")
    fields = [f for f in unified if f.name not in (N_TOKENS, MIX_GROUP)]
    return pa.schema(fields + [pa.field(N_TOKENS, pa.int64()), pa.field(MIX_GROUP, pa.string())])


def glob_to_regex(pattern: str) -> str:
    """A URL glob (`*` any run of characters, `?` one character) as an anchored regex (RE2 / Rust regex)."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return "^" + "".join(out) + "$"


def excluded_expr(exclude: Exclusions) -> pl.Expr | None:
    """True for rows `exclude` names (by id or URL glob); None when it names none. The one rule of
    what is excluded: planning leaves these rows out of every group, a takedown removes them."""
    if not exclude:
        return None
    expr = pl.col(S.ID).is_in(sorted(set(exclude.ids))) if exclude.ids else pl.lit(False)
    for pattern in exclude.url_patterns:
        expr = expr | pl.col(S.URL).cast(pl.Utf8).str.contains(glob_to_regex(pattern)).fill_null(False)
    return expr


def excluded_rows(table: pa.Table, exclude: Exclusions) -> np.ndarray:
    """Which rows of `table` (its id and url columns; a missing url column is all null) `exclude` names."""
    frame = pl.DataFrame(
        {
            S.ID: pl.from_arrow(table.column(S.ID)).cast(pl.Utf8),
            S.URL: (
                pl.from_arrow(table.column(S.URL)).cast(pl.Utf8)
                if S.URL in table.column_names
                else pl.Series(S.URL, [None] * table.num_rows, pl.Utf8)
            ),
        }
    )
    expr = excluded_expr(exclude)
    if expr is None:
        return np.zeros(table.num_rows, bool)
    return frame.select(expr.fill_null(False).alias("x")).get_column("x").to_numpy().astype(bool)


def predicate_columns(spec: MixSpec) -> set[str]:
    cols = set()
    if spec.exclude.ids:
        cols.add(S.ID)
    if spec.exclude.url_patterns:
        cols.add(S.URL)
    for g in spec.groups:
        cols |= where_columns(g.where)
        cols.update(g.sampling.columns())
    return cols


def group_predicate(frame: pl.DataFrame, group: Any) -> pl.Expr:
    """True for rows matching every predicate of `group` (on their own: earlier groups aside)."""
    return compile_where(group.where, frame.schema)


def assign_groups(spec: MixSpec, frame: pl.DataFrame) -> np.ndarray:
    """Group index of each document (-1: none); the first matching group in spec order wins."""
    expr = pl.lit(-1, pl.Int16)
    for index in reversed(range(len(spec.groups))):  # built inside-out so the first group wins
        expr = pl.when(group_predicate(frame, spec.groups[index])).then(pl.lit(index, pl.Int16)).otherwise(expr)
    excluded = excluded_expr(spec.exclude)
    if excluded is not None:  # taken down: in no group, so never drawn
        expr = pl.when(excluded).then(pl.lit(-1, pl.Int16)).otherwise(expr)
    # with_columns, not select: a pure literal (every group `where: {}`) must broadcast to every row
    return frame.with_columns(expr.alias("__group")).get_column("__group").to_numpy().astype(np.int16)


def match_counts(spec: MixSpec, frame: pl.DataFrame) -> tuple[list[int], list[int]]:
    """Per group: rows matching its predicates on their own, and those of them not excluded. They
    explain an empty group: nothing matches, all its matches are taken down, or earlier groups took them."""
    if frame.height == 0:
        return [0] * len(spec.groups), [0] * len(spec.groups)
    excluded = excluded_expr(spec.exclude)
    kept = ~excluded if excluded is not None else pl.lit(True)
    exprs = []
    for gi, group in enumerate(spec.groups):
        pred = group_predicate(frame, group)
        exprs += [pred.sum().alias(f"m{gi}"), (pred & kept).sum().alias(f"k{gi}")]
    row = frame.select(exprs).row(0)
    return [int(v) for v in row[0::2]], [int(v) for v in row[1::2]]
