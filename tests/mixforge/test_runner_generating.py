"""The shard runner with generating stages (new rows, e.g. rephrasings) and batch checkpoints.

A small generating stage stands in for rephrase here so the runner's accounting and resume
logic are tested in the main environment, without vLLM; tests/mixforge/rephrase/test_rephrase.py runs the real
stage on the real engine.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.runner import ShardJob, run_shard, summarize_stage
from mixforge.runs import StageLayout
from mixforge.stage import ShardContext, Stage, StageResult
from tests.helpers import prose_docs, write_shard


class Crash(Exception):
    pass


class Echoes(Stage):
    """Writes two synthetic rows (`#a`, `#b`) per document whose id ends in an even digit, skips
    odd ones, drops ids ending in 5; optionally crashes on a given batch."""

    name = "echoes"
    generates = True
    checkpoint_batches = True

    def __init__(self, batch_rows: int = 4, crash_on_batch: int | None = None) -> None:
        self.batch_rows = batch_rows
        self.crash_on_batch = crash_on_batch
        self.batches_processed: list[int] = []

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        number = ctx.row_offset // self.batch_rows
        if number == self.crash_on_batch:
            raise Crash(f"batch {number}")
        self.batches_processed.append(number)
        ids = batch.column(S.ID).to_pylist()
        rows, removed, skipped = [], [], 0
        for i, doc_id in enumerate(ids):
            last = int(doc_id[-1])
            if last == 5:
                removed.append(i)
            elif last % 2:
                skipped += 1
            else:
                for style in "ab":
                    rows.append(
                        {
                            S.ID: f"{doc_id}#{style}",
                            S.TEXT: batch.column(S.TEXT)[i].as_py().upper(),
                            S.SOURCE: "echo",
                            S.URL: None,
                            S.META: None,
                        }
                    )
        ctx.count("echo_rows", len(rows))
        ctx.add_figures({"rows_by_style": {"a": len(rows) // 2, "b": len(rows) // 2}, "per_batch": [1, len(ids)]})
        dropped = batch.take(pa.array(removed, pa.int64()))
        dropped = dropped.append_column(S.DROP_REASON, pa.array(["ends_in_5"] * len(removed), pa.string()))
        kept = pa.Table.from_pylist(rows, schema=S.CORE_SCHEMA)
        return StageResult(kept, dropped, used=len(ids) - len(removed) - skipped, skipped={"odd": skipped})


@pytest.fixture
def shard(tmp_path):
    return write_shard(str(tmp_path / "in.parquet"), prose_docs(18, prefix="g"))


def test_generating_stage_counts_reconcile_and_skips_are_not_removed(tmp_path, shard):
    layout = StageLayout(str(tmp_path / "out"))
    stats = run_shard(Echoes(), ShardJob(0, shard, layout))
    # ids g-0..g-17: last digits 0..9,0..7 -> 5s: g-5, g-15; odd (not 5): 7 ids; even: 9 ids
    assert stats["docs_in"] == 18
    assert stats["docs_dropped"] == {"ends_in_5": 2}
    assert stats["docs_skipped"] == {"odd": 7}
    assert stats["docs_used"] == 9
    assert stats["docs_kept"] == 18 == pq.read_table(layout.part(0)).num_rows  # two rows per used document
    removed = pq.read_table(layout.removed(0))
    assert sorted(removed.column(S.ID).to_pylist()) == ["g-15", "g-5"]  # skipped rows are counted, not copied
    assert not os.path.exists(layout.pieces(0))  # checkpoints are merged, then deleted
    assert 0 < stats["cpu_seconds"] and stats["seconds"] > 0

    summary = summarize_stage("echoes", layout.dir, [stats], 1.0)
    assert summary["docs_used"] == 9 and summary["docs_skipped"] == {"odd": 7}
    assert [(f["reason"], f["docs"], f["docs_remaining"]) for f in summary["funnel"]] == [
        ("ends_in_5", 2, 16),
        ("odd", 7, 9),
    ]
    assert summary["funnel"][1]["skipped"] is True
    assert summary["shard_cpu_seconds"] == round(stats["cpu_seconds"], 3)
    assert (
        summary["workers"] == 1 and summary["worker_busy_share"] == 1.0 and stats["worker"].endswith(f":{os.getpid()}")
    )
    # figures add up over shards too; a marker without them (an older version's) is counted apart
    older = {k: v for k, v in stats.items() if k != "figures"} | {"index": 2}
    two = summarize_stage("echoes", layout.dir, [stats, {**stats, "index": 1}, older], 1.0)
    assert two["figures"] == {"rows_by_style": {"a": 18, "b": 18}, "per_batch": [10, 36]} and two[
        "figures_missing"
    ] == [2]


def test_checkpointed_shard_resumes_from_its_last_finished_batch(tmp_path, shard):
    clean_layout = StageLayout(str(tmp_path / "clean"))
    clean = run_shard(Echoes(), ShardJob(0, shard, clean_layout))

    layout = StageLayout(str(tmp_path / "out"))
    with pytest.raises(Crash):
        run_shard(Echoes(crash_on_batch=3), ShardJob(0, shard, layout))
    assert not os.path.exists(layout.done(0)) and not os.path.exists(layout.part(0))
    assert sorted(os.listdir(layout.pieces(0))) == sorted(
        [f"b-{b:06d}.{k}.{ext}" for b in range(3) for k, ext in (("done", "json"), ("kept", "parquet"))]
        + ["b-000001.removed.parquet"]
    )  # g-5: batch 1 (rows 4-7)

    resumed_stage = Echoes()
    resumed = run_shard(resumed_stage, ShardJob(0, shard, layout))
    assert resumed_stage.batches_processed == [3, 4]  # batches 0-2 were restored, not recomputed
    for key in (
        "docs_in",
        "docs_kept",
        "docs_used",
        "docs_dropped",
        "docs_skipped",
        "counters",
        "figures",
        "chars_kept",
    ):
        assert resumed[key] == clean[key], key
    assert clean["figures"] == {"rows_by_style": {"a": 9, "b": 9}, "per_batch": [5, 18]}  # summed over the 5 batches
    assert pq.read_table(layout.part(0)).equals(pq.read_table(clean_layout.part(0)))
    assert pq.read_table(layout.removed(0)).equals(pq.read_table(clean_layout.removed(0)))
    assert not os.path.exists(layout.pieces(0))

    # Checkpoints written before figures existed: the shard's marker records none (its report
    # then reads the shard back) rather than the figures of the recomputed batches alone.
    old_layout = StageLayout(str(tmp_path / "old"))
    with pytest.raises(Crash):
        run_shard(Echoes(crash_on_batch=3), ShardJob(0, shard, old_layout))
    for name in os.listdir(old_layout.pieces(0)):
        if name.endswith(".done.json"):
            path = os.path.join(old_layout.pieces(0), name)
            point = json.load(open(path))
            del point["figures"]
            json.dump(point, open(path, "w"))
    assert "figures" not in run_shard(Echoes(), ShardJob(0, shard, old_layout))


def test_checkpoints_from_a_different_batching_are_recomputed(tmp_path, shard):
    layout = StageLayout(str(tmp_path / "out"))
    with pytest.raises(Crash):
        run_shard(Echoes(batch_rows=4, crash_on_batch=2), ShardJob(0, shard, layout))
    stage = Echoes(batch_rows=5)
    stats = run_shard(stage, ShardJob(0, shard, layout))
    assert stage.batches_processed == [0, 1, 2, 3]  # the 4-row checkpoints do not line up with 5-row batches
    assert stats["docs_in"] == 18 and stats["docs_kept"] == 18
    ids = pq.read_table(layout.part(0)).column(S.ID).to_pylist()
    assert len(ids) == len(set(ids)) == 18


def test_a_filter_that_reports_skips_is_refused(tmp_path, shard):
    class BadFilter(Stage):
        name = "bad"

        def process(self, batch, ctx):
            return StageResult(batch.slice(1), None, skipped={"nope": 1})

    with pytest.raises(TypeError, match="not a generating stage"):
        run_shard(BadFilter(), ShardJob(0, shard, StageLayout(str(tmp_path / "out"))))


def test_generating_stage_on_s3_checkpoints_and_merges(s3_bucket, shard):
    """Pieces, merge and cleanup through s3fs (no rename, no directories)."""
    import fsspec

    root, opts = s3_bucket
    layout = StageLayout(f"{root}/run/echoes")
    with pytest.raises(Crash):
        run_shard(Echoes(crash_on_batch=2), ShardJob(0, shard, layout), storage_options=opts)
    stage = Echoes()
    stats = run_shard(stage, ShardJob(0, shard, layout), storage_options=opts)
    assert stage.batches_processed == [2, 3, 4] and stats["docs_kept"] == 18
    fs = fsspec.filesystem("s3", **(opts or {}))
    texts = pq.read_table(layout.part(0), filesystem=fs).column(S.TEXT)
    assert pc.all(pc.equal(texts, pc.utf8_upper(texts))).as_py()
    assert not fs.exists(layout.pieces(0))
