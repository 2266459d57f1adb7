"""The one interface every stage implements, with stats built into the base.

A stage is a plain object over Arrow tables: `process(batch)` returns the kept rows and the
rows it drops, each dropped row labelled with a `drop_reason`. Counting (docs and chars in,
kept, dropped by reason), timing and the `_removed/` audit are done by the shard runner for
every stage alike, so a new filter is one short class. Stage-specific counters go through
`ShardContext.count`.

Stages declare what they need (CPUs, GPUs) and what they read and write, as NeMo Curator's do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge.executor import Resources  # noqa: F401 - what a stage declares it needs (re-exported)


@dataclass
class ShardContext:
    """What a stage knows about the shard it is processing, and where it records counters."""

    shard_uri: str
    shard_index: int
    row_offset: int = 0  # row number, within the shard, of the current batch's first row
    # Where each row of the current batch is in the shard, when not simply row_offset + i (raw
    # input: JSONL line numbers, Parquet rows left after the reader's drops), in `position_unit`s.
    positions: pa.Array | None = None
    position_unit: str = "row"
    counters: Counter = field(default_factory=Counter)
    # Stage-specific figures that add up (e.g. score histograms): nested dicts whose leaves are
    # numbers or equal-length lists of numbers. Summed over batches here, over shards in the
    # stage summary (`figures`), so a report needs no second pass over the output. None: not
    # known for the whole shard (restored from a checkpoint that predates figures).
    figures: dict | None = field(default_factory=dict)

    def rows_in_shard(self, rows) -> pa.Array:
        """Where the given row indices of the current batch are in the shard (int64, in `position_unit`s)."""
        if isinstance(rows, pa.ChunkedArray):
            rows = rows.combine_chunks()
        elif not isinstance(rows, pa.Array):
            rows = pa.array(rows, pa.int64())
        at = self.positions.take(rows) if self.positions is not None else pc.add(rows, self.row_offset)
        return at.cast(pa.int64())

    def where(self, rows) -> pa.Array:
        """ "<shard uri> line|row <n>" for the given row indices of the current batch (drop details)."""
        return _where(self.shard_uri, self.position_unit, self.rows_in_shard(rows))

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] += int(n)

    def add_figures(self, figures: dict) -> None:
        if self.figures is not None:
            self.figures = add_figures(self.figures, figures)


def add_figures(a: dict, b: dict) -> dict:
    """The sum of two figure trees: leaves added (numbers, or lists element-wise), keys unioned."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = add_figures(out[key], value)
        elif isinstance(value, list):
            if len(value) != len(out[key]):
                raise ValueError(f"figures {key!r}: cannot add lists of lengths {len(out[key])} and {len(value)}")
            out[key] = [x + y for x, y in zip(out[key], value)]
        else:
            out[key] = out[key] + value
    return out


@dataclass
class StageResult:
    """What a stage made of one batch.

    A filtering stage returns some of its input rows as `kept` and the others as `removed`.
    A generating stage (`Stage.generates`) returns new rows as `kept` and accounts for every
    input row as `used` (it produced output), `skipped` (deliberately passed over: a count per
    reason, no rows written, the row stays where it is) or `removed` (dropped with a reason).
    """

    kept: pa.Table
    # input columns + drop_reason (+ optional drop_detail, drop_rule, drop_value, drop_op, drop_threshold;
    # the runner completes the schema.DROP_FIELDS: shard, row, and a detail naming them)
    removed: pa.Table | None = None
    # Row indices, within the batch, of the `removed` rows (in their order): the runner then names
    # shard and line/row in every drop_detail the stage left null. None: found by id.
    removed_rows: pa.Array | None = None
    used: int | None = None  # generating stages: input rows that produced output
    skipped: dict[str, int] | None = None  # generating stages: input rows passed over, by reason


class Stage(ABC):
    name: ClassVar[str]
    reads_raw: ClassVar[bool] = False  # True: input is raw shards (any schema), read via shards.read_raw
    resources: ClassVar[Resources] = Resources()
    reads: ClassVar[tuple[str, ...]] = (S.TEXT,)
    writes: ClassVar[tuple[str, ...]] = ()
    # A generating stage writes new rows (e.g. rephrasings), not a subset of its input; its counts
    # reconcile as docs_in = used + skipped + dropped (StageResult).
    generates: ClassVar[bool] = False
    # Checkpoint every batch (costly stages such as LLM generation): a crash loses at most the
    # batch in flight, not the shard. `batch_rows` then fixes the batch size (None: the read options').
    checkpoint_batches: ClassVar[bool] = False
    batch_rows: int | None = None
    # Ray runtime_env for the workers running this stage (e.g. {"py_executable": ...}); None: the driver's.
    runtime_env: dict | None = None

    def setup(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Load models or other heavy state; called once per worker process, not per batch."""

    @abstractmethod
    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult: ...

    def drop_order(self) -> list[str]:
        """Drop reasons in the order the stage checks them (the funnel); [] when order means nothing."""
        return []


def split_by_reason(
    batch: pa.Table,
    reason: pa.Array,
    ctx: ShardContext | None = None,
    detail: str | pa.Array | None = None,
    *,
    rule: pa.Array | None = None,
    value: pa.Array | None = None,
    op: pa.Array | None = None,
    threshold: pa.Array | None = None,
) -> StageResult:
    """Rows whose `reason` is null are kept; the others are removed, labelled with it.

    `detail` (one text, or one per row) explains the drop; with `ctx` it is prefixed with the
    shard and line/row. Without a detail, the runner names shard and line/row and the measure.
    `rule`, `value`, `op`, `threshold` (one per row, or None): what the drop measured
    (schema.DROP_RULE ...): `gopher_quality.alpha_words`, 0.42, "<", 0.8.
    """
    reason = reason.combine_chunks() if isinstance(reason, pa.ChunkedArray) else reason
    dropped = pc.is_valid(reason)
    if not pc.any(dropped).as_py():
        return StageResult(batch, None)
    rows = pc.indices_nonzero(dropped)
    removed = batch.filter(dropped).append_column(S.DROP_REASON, reason.filter(dropped).cast(pa.string()))
    if detail is not None and ctx is not None:
        detail = detail.filter(dropped) if isinstance(detail, (pa.Array, pa.ChunkedArray)) else detail
        removed = removed.append_column(S.DROP_DETAIL, pc.binary_join_element_wise(ctx.where(rows), detail, ": "))
    for name, values in ((S.DROP_RULE, rule), (S.DROP_VALUE, value), (S.DROP_OP, op), (S.DROP_THRESHOLD, threshold)):
        if values is not None:
            removed = removed.append_column(name, values.filter(dropped))
    return StageResult(batch.filter(pc.invert(dropped)), removed, removed_rows=rows)


def _where(shard: str, unit: str, rows: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(f"{shard} {unit} ", pc.cast(rows, pa.string()), "")


def _column(table: pa.Table, field: pa.Field) -> pa.Array:
    if field.name not in table.column_names:
        return pa.nulls(table.num_rows, field.type)
    return table.column(field.name).combine_chunks().cast(field.type)


def complete_drops(removed: pa.Table, shard: str, unit: str, rows: pa.Array) -> pa.Table:
    """`removed` with the drop columns (schema.DROP_FIELDS) last, in their order and types: the shard, the
    rows (`rows`, int64, null: not known), the rule (drop_reason where the stage named none), and a
    drop_detail where the stage left none: "<shard> row|line <n>: <rule>[: <value> <op> <threshold>]"."""
    drop = {f.name: _column(removed, f) for f in S.DROP_FIELDS}
    drop[S.DROP_SHARD] = pa.array([shard] * removed.num_rows, pa.string())
    drop[S.DROP_ROW] = rows
    drop[S.DROP_UNIT] = pc.if_else(pc.is_valid(rows), pa.scalar(unit), pa.scalar(None, pa.string()))
    drop[S.DROP_RULE] = pc.coalesce(drop[S.DROP_RULE], drop[S.DROP_REASON])
    if drop[S.DROP_DETAIL].null_count:
        measure = S.describe_drops(drop[S.DROP_RULE], drop[S.DROP_VALUE], drop[S.DROP_OP], drop[S.DROP_THRESHOLD])
        where = pc.coalesce(
            _where(shard, unit, rows),
            pc.binary_join_element_wise(f"{shard} id ", removed.column(S.ID).cast(pa.string()), ""),
        )
        drop[S.DROP_DETAIL] = pc.coalesce(drop[S.DROP_DETAIL], pc.binary_join_element_wise(where, measure, ": "))
    rest = removed.drop_columns([c for c in S.DROP_COLUMNS if c in removed.column_names])
    for f in S.DROP_FIELDS:
        rest = rest.append_column(f, drop[f.name])
    return rest


def locate_drops(result: StageResult, batch: pa.Table, ctx: ShardContext) -> pa.Table | None:
    """`result.removed` completed with the drop columns (`complete_drops`): every drop names its shard and
    line/row. The rows are `result.removed_rows`, or else found in `batch` by id (ids are unique within
    a shard); a row found neither way is named by its id.
    """
    removed = result.removed
    if removed is None or removed.num_rows == 0:
        return removed
    if result.removed_rows is not None:
        rows = ctx.rows_in_shard(result.removed_rows)
    else:
        found = pc.index_in(removed.column(S.ID), value_set=batch.column(S.ID).combine_chunks())
        rows = pc.if_else(pc.is_valid(found), ctx.rows_in_shard(pc.fill_null(found, 0)), pa.scalar(None, pa.int64()))
    return complete_drops(removed, ctx.shard_uri, ctx.position_unit, rows)


def locate_rejects(rejects: pa.Table, ctx: ShardContext) -> pa.Table:
    """Rows a raw reader could not use (`shards.read_raw`, which gives each its line/row as `drop_row`),
    completed with the other drop columns."""
    return complete_drops(rejects, ctx.shard_uri, ctx.position_unit, rejects.column(S.DROP_ROW).combine_chunks())


class PassThrough(Stage):
    """Read -> write, nothing else: used to measure what orchestration and I/O cost."""

    name = "passthrough"
    reads = ()

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        return StageResult(batch)
