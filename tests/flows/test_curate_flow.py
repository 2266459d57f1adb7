"""The curate flow end to end with real parts: Prefect (test harness), a local Ray, S3 on moto."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.config import CurateConfig, RayConfig
from mixforge.runs import RunLayout
from mixforge.stage import ShardContext, Stage, StageResult
from tests.helpers import docs, prose_docs, write_shard

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_harness")


def make_inputs(root: str, fs=None) -> dict[str, int]:
    """Five shards in every format plus a corrupt one; returns expected docs per readable shard."""
    write_shard(f"{root}/a.jsonl", docs(30, "a") + [b"{broken", {"text": ""}], fs)
    write_shard(f"{root}/b.jsonl.gz", docs(20, "b"), fs)
    write_shard(f"{root}/c.jsonl.zst", docs(25, "c"), fs)
    write_shard(f"{root}/d.parquet", docs(15, "d"), fs)
    write_shard(f"{root}/e.jsonl", [], fs)
    corrupt = b"\x28\xb5\x2f\xfd" + b"not zstd" * 20
    if fs is None:
        open(f"{root}/f.jsonl.zst", "wb").write(corrupt)
    else:
        fs.pipe_file(f"{root}/f.jsonl.zst", corrupt)
    return {"docs_in": 92, "docs_kept": 90}


def artifacts_for(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def check_summary(summary: dict, expected: dict, corrupt_name: str) -> dict:
    assert [s["name"] for s in summary["stages"]] == ["normalize"]
    stage = summary["stages"][0]
    assert stage["docs_in"] == expected["docs_in"] and stage["docs_kept"] == expected["docs_kept"]
    assert stage["docs_dropped"] == {"empty_text": 1, "invalid_json": 1}
    assert stage["docs_in"] == stage["docs_kept"] + sum(stage["docs_dropped"].values())  # counts reconcile
    assert [q["shard"].rsplit("/", 1)[1] for q in stage["quarantined"]] == [corrupt_name]
    assert corrupt_name in stage["quarantined"][0]["error"]
    assert summary["output"] == stage["output"]
    return stage


def test_curate_local_with_stats_audit_and_artifacts(tmp_path):
    from flows.curate import curate

    inputs = tmp_path / "raw"
    inputs.mkdir()
    expected = make_inputs(str(inputs))
    (inputs / "notes.txt").write_text("not a shard\n")  # left out, and said so
    (inputs / "gone.jsonl").symlink_to(inputs / "missing.jsonl")
    config = CurateConfig(stages=["normalize"], ray=RayConfig(max_shards_in_flight=2))
    summary = curate(input=str(inputs), output=str(tmp_path / "store"), config=config)
    stage = check_summary(summary, expected, "f.jsonl.zst")
    assert {os.path.basename(s["uri"]): s["reason"].split(" (")[0] for s in summary["inputs"]["skipped"]} == {
        "gone.jsonl": "broken symlink",
        "notes.txt": "not a shard format",
    }

    out = tmp_path / "store" / "runs" / summary["run_id"] / "normalize"
    # Outputs 1:1 with readable input shards, all valid contract Parquet.
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == [f"part-{i:05d}.parquet" for i in range(5)]
    total = sum(pq.read_metadata(out / p).num_rows for p in parts)
    assert total == expected["docs_kept"]
    assert pq.read_schema(out / "part-00000.parquet").names == list(S.CORE_COLUMNS)
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["docs_kept"] == stage["docs_kept"] and stats["quarantined"] == stage["quarantined"]
    assert "figures" not in stats  # only stages that record figures (classify) carry them
    removed = pq.read_table(out / "_removed" / "part-00000.parquet")
    assert sorted(removed.column(S.DROP_REASON).to_pylist()) == ["empty_text", "invalid_json"]
    assert json.loads((out / "_quarantine" / "part-00005.json").read_text())["shard"].endswith("f.jsonl.zst")

    # Artifacts, read back through the Prefect client.
    key = f"curate-{summary['run_id']}"
    (table,) = artifacts_for(key)
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert rows[0]["stage"] == "normalize" and rows[0]["docs_kept"] == expected["docs_kept"]
    assert 1 <= rows[0]["workers"] <= 2 and 0 < rows[0]["worker_busy_share"] <= 1.01  # 5 readable shards, 2 in flight
    (md,) = artifacts_for(f"{key}-summary")
    assert "f.jsonl.zst" in md.data and "invalid_json" in md.data and f"% of {rows[0]['workers']} |" in md.data
    assert "## Inputs skipped (2)" in md.data and f"| `{inputs}/notes.txt` | not a shard format (.txt;" in md.data

    # Rerunning resumes: every shard already done is skipped, nothing is rewritten.
    before = {p: os.stat(out / p).st_mtime_ns for p in parts}
    again = curate(input=str(inputs), output=str(tmp_path / "store"), config=config)
    assert again["run_id"] == summary["run_id"] and again["resumed"] is True
    assert again["stages"][0]["shards_skipped"] == 5
    assert {p: os.stat(out / p).st_mtime_ns for p in parts} == before


def test_curate_on_s3(s3_bucket):
    import s3fs

    from flows.curate import curate

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    expected = make_inputs(f"{root}/raw".removeprefix("s3://"), fs)
    config = CurateConfig(stages=["normalize"], storage={"options": opts})
    summary = curate(input=f"{root}/raw/", output=f"{root}/store", config=config)
    check_summary(summary, expected, "f.jsonl.zst")
    assert summary["output"] == f"{root}/store/runs/{summary['run_id']}/normalize"
    fs.invalidate_cache()
    parts = sorted(fs.glob(f"{summary['output']}/part-*.parquet"))
    assert len(parts) == 5
    assert sum(pq.ParquetFile(fs.open(p)).metadata.num_rows for p in parts) == expected["docs_kept"]
    assert fs.exists(f"{summary['output']}/_stats.json")


class FlakyStage(Stage):
    """Fails on shard 1 until a flag file exists: a partition that fails, then is retried."""

    name = "flaky"

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        if ctx.shard_index == 1 and not os.path.exists(self.flag):
            raise RuntimeError("worker lost its connection")
        ctx.count("batches")
        return StageResult(batch)


def test_failed_shard_fails_the_stage_then_a_rerun_retries_only_it(tmp_path):
    from mixforge.runner import ShardJob, run_shard
    from tasks.stage_runner import StageFailed, run_stage

    normalize_layout = RunLayout(str(tmp_path / "store"), "r").stage("normalize")
    from mixforge.stages.normalize import Normalize

    inputs = []
    for i in range(3):
        src = write_shard(str(tmp_path / "raw" / f"{i}.jsonl"), docs(10, str(i)))
        run_shard(Normalize(), ShardJob(i, src, normalize_layout))
        inputs.append((i, normalize_layout.part(i)))
    layout = RunLayout(str(tmp_path / "store"), "r").stage("flaky")
    flag = str(tmp_path / "fixed")
    with pytest.raises(StageFailed, match=r"shard 1 .*worker lost its connection"):
        run_stage(FlakyStage(flag), layout, inputs, RayConfig(max_retries=1))
    assert sorted(os.listdir(tmp_path / "store" / "runs" / "r" / "flaky" / "_done")) == [
        "part-00000.json",
        "part-00002.json",
    ]
    open(flag, "w").close()
    summary = run_stage(FlakyStage(flag), layout, inputs, RayConfig(max_retries=1))
    assert summary["shards_skipped"] == 2
    assert summary["docs_in"] == summary["docs_kept"] == 30  # the retried shard is counted once
    assert summary["counters"]["batches"] >= 3


def test_run_stage_schedules_the_largest_shards_first(tmp_path, s3_bucket):
    import s3fs

    from mixforge.stage import PassThrough
    from tasks.stage_runner import run_stage

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    counts = [3, 40, 1, 12, 25]
    inputs = []
    for i, n in enumerate(counts):
        local = write_shard(str(tmp_path / f"in-{i}.parquet"), prose_docs(n, prefix=f"s{i}"))
        uri = f"{root}/sizes/part-{i:05d}.parquet"
        fs.put_file(local, uri.removeprefix("s3://"))
        inputs.append((i, uri))
    inputs.append((len(counts), f"{root}/elsewhere/missing.parquet"))  # no size: last (and quarantined)
    layout = RunLayout(root, "sizes").stage("passthrough")
    summary = run_stage(PassThrough(), layout, inputs, RayConfig(max_shards_in_flight=1), storage_options=opts)
    fs.invalidate_cache()
    done = [json.loads(fs.cat_file(p)) for p in fs.ls(f"{layout.dir}/_done".removeprefix("s3://"))]
    order = [d["index"] for d in sorted(done, key=lambda d: d["started_at"])]
    assert order == [1, 4, 3, 0, 2]  # by size, largest first; one shard in flight runs them in that order
    assert summary["docs_in"] == sum(counts) and len(summary["quarantined"]) == 1


def test_curate_runs_normalize_then_filter_and_reconciles(tmp_path):
    from flows.curate import curate

    prose = prose_docs(6)
    junk = [
        {"text": "buy now!!! $$$ 50% off {click} here"},
        {"text": "1 2 3 4 5 6 7 8 9 10 " * 20},
        {"text": "Dies ist ein deutscher Satz über das Wetter, und er ist ganz sicher nicht englisch. " * 10},
    ]
    write_shard(str(tmp_path / "raw" / "a.jsonl"), prose[:3] + junk)
    write_shard(str(tmp_path / "raw" / "b.parquet"), prose[3:])
    config = CurateConfig(stages=["normalize", "filter"], filter={"language_id": {"keep": ["en"]}})
    summary = curate(input=str(tmp_path / "raw"), output=str(tmp_path / "store"), config=config)
    normalize, filt = summary["stages"]
    assert (normalize["name"], filt["name"]) == ("normalize", "filter")
    assert summary["output"] == filt["output"] and filt["output"].endswith("/filter")
    assert filt["docs_in"] == normalize["docs_kept"] == 9
    assert filt["docs_kept"] == 6
    assert filt["docs_in"] == filt["docs_kept"] + sum(filt["docs_dropped"].values())
    assert filt["docs_dropped"]["lang"] >= 1  # the German document (and numbers: no language)
    # The funnel lists drops in check order: language ID, then the rule sets as configured.
    families = [step["reason"].split(".")[0] for step in filt["funnel"]]
    config_order = ["lang", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality"]
    assert families == sorted(families, key=config_order.index)
    assert [step["docs_remaining"] for step in filt["funnel"]][-1] == filt["docs_kept"]
    kept = pa.concat_tables(
        [
            pq.read_table(p)
            for p in sorted((tmp_path / "store" / "runs" / summary["run_id"] / "filter").glob("part-*.parquet"))
        ]
    )
    assert set(kept.column("lang").to_pylist()) == {"en"}
    assert "gopher_quality_alpha_words_ratio" in kept.column_names  # scores are kept as columns
    removed = pq.read_table(
        tmp_path / "store" / "runs" / summary["run_id"] / "filter" / "_removed" / "part-00000.parquet"
    )
    assert sorted(removed.column(S.DROP_REASON).to_pylist()) == sorted(
        k for k, v in filt["docs_dropped"].items() for _ in range(v)
    )

    # A stage on its own, over the curated output (contract Parquet): no normalize in front.
    only = curate(input=normalize["output"], output=str(tmp_path / "store2"), config=CurateConfig(stages=["filter"]))
    assert [s["name"] for s in only["stages"]] == ["filter"] and only["stages"][0]["docs_kept"] == 6
