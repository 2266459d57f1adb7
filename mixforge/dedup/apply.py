"""The apply step of dedup: an ordinary stage over the run's shards (stats, `_removed/` audit, resume
markers) that keeps one document per cluster and drops the rest, from the clusters step's assignments."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge.dedup.boilerplate import remove_lines
from mixforge.dedup.run import DedupRun
from mixforge.schema import DUP_CLUSTER, DUP_COUNT, DUPLICATE_OF
from mixforge.shards import read_parquet
from mixforge.stage import ShardContext, Stage, StageResult


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
            self._loaded = (shard, read_parquet(self.layout.assignment(shard), self.storage_options))
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
            clusters = sub.column("dup_cluster").take(pa.array(order)).combine_chunks()
            cluster = pc.replace_with_mask(cluster, pa.array(mask), clusters)
            count[local] = sub.column("dup_count").to_numpy()
        removed_mask = np.zeros(n, bool)
        removed_mask[local] = ~sub.column("is_kept").to_numpy()
        out = batch
        if self.boilerplate is not None:
            text = batch.column(S.TEXT)
            edited, lines = remove_lines(text, self.boilerplate, self.cfg.boilerplate)
            ctx.count("boilerplate.lines_removed", int(lines.sum()))
            ctx.count("boilerplate.chars_removed", S.text_chars(text) - S.text_chars(edited))
            ctx.count("boilerplate.docs_edited", int((lines > 0).sum()))
            out = out.set_column(out.column_names.index(S.TEXT), S.TEXT, edited)
        for name, values in ((DUP_CLUSTER, cluster), (DUP_COUNT, pa.array(count))):
            out = S.set_column(out, name, values)
        if not removed_mask.any():
            return StageResult(out)
        gone = sub.filter(pc.invert(sub.column("is_kept")))  # in row order, like the removed rows
        removed = out.filter(pa.array(removed_mask))
        rows = pa.array(np.flatnonzero(removed_mask))
        reason, kept = gone.column("reason").combine_chunks(), gone.column("duplicate_of").combine_chunks()
        # "<shard> row <n>: near_duplicate of 'b' (cluster of 3)": which document the cluster kept
        detail = pc.binary_join_element_wise(
            ctx.where(rows),
            ": ",
            reason,
            " of '",
            kept,
            "' (cluster of ",
            pc.cast(removed.column(DUP_COUNT), pa.string()),
            ")",
            "",
        )
        removed = removed.append_column(DUPLICATE_OF, kept)
        removed = removed.append_column(S.DROP_REASON, reason).append_column(S.DROP_DETAIL, detail)
        return StageResult(out.filter(pa.array(~removed_mask)), removed, removed_rows=rows)
