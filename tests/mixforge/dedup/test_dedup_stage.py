"""dedup end to end on Ray: exact + near duplicates, transitive clusters, keep rules, determinism, resume."""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.config import CurateConfig
from tests.helpers import prose, write_shard

pytestmark = pytest.mark.usefixtures("ray_local", "prefect_harness")


def replace_words(text: str, positions: list[int], tag: str) -> str:
    words = text.split(" ")
    for p in positions:
        words[p] = f"{tag}{p}"
    return " ".join(words)


def corpus() -> tuple[list[list[dict]], dict[str, set[str]]]:
    """Three shards; returns rows per shard and the expected clusters (ids) with 2+ members."""
    a = prose(1, 30)  # ~360 words: word 5-gram shingles
    b = replace_words(a, [10, 60, 110, 160], "x")  # A~B
    c = replace_words(b, [210, 260, 300, 340], "y")  # B~C, but A and C differ in 8 words: linked only through B
    short = (
        "The old lantern in the harbour window burned all night while the sailors slept and the tide came in "
        "slowly; by morning the fishing boats had gone out past the grey stones of the breakwater and the gulls "
        "followed them."
    )
    short_near = short.replace("slept", "dreamed")  # a short document with one word replaced
    d = prose(2, 30)
    rows = [
        [{"id": "a", "text": a}, {"id": "unique-1", "text": prose(3, 30)}, {"id": "d", "text": d}],
        [{"id": "b", "text": b}, {"id": "d-copy", "text": d}, {"id": "short-1", "text": short}],
        [
            {"id": "c", "text": c},
            {"id": "d-COPY-upper", "text": d.upper()},
            {"id": "short-2", "text": short_near},
            {"id": "unique-2", "text": prose(4, 30)},
        ],
    ]
    return rows, {"a": {"a", "b", "c"}, "d": {"d", "d-copy", "d-COPY-upper"}, "short-1": {"short-1", "short-2"}}


def run_dedup(tmp_path, name: str, config: CurateConfig, rows=None):
    from flows.curate import curate

    rows = rows or corpus()[0]
    for i, shard in enumerate(rows):
        write_shard(str(tmp_path / f"raw-{name}" / f"s{i}.jsonl"), shard)
    summary = curate(input=str(tmp_path / f"raw-{name}"), output=str(tmp_path / f"store-{name}"), config=config)
    out = tmp_path / f"store-{name}" / "runs" / summary["run_id"] / "dedup"
    kept = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    removed_files = sorted((out / "_removed").glob("*.parquet"))
    if removed_files:
        removed = pa.concat_tables([pq.read_table(p) for p in removed_files])
    else:
        removed = pa.table({"id": pa.array([], pa.string())})
    return summary, kept, removed, out


def test_exact_near_and_transitive_duplicates(tmp_path):
    _, expected = corpus()
    summary, kept, removed, out = run_dedup(tmp_path, "base", CurateConfig(stages=["dedup"]))
    stage = summary["stages"][-1]
    assert [s["name"] for s in summary["stages"]] == ["normalize", "dedup"]
    assert stage["docs_in"] == 10 and stage["docs_kept"] == 5
    assert stage["docs_in"] == stage["docs_kept"] + sum(stage["docs_dropped"].values())
    # Keep rule default: smallest id in each cluster.
    assert sorted(kept.column("id").to_pylist()) == ["a", "d", "short-1", "unique-1", "unique-2"]
    counts = dict(zip(kept.column("id").to_pylist(), kept.column("dup_count").to_pylist()))
    assert counts == {"a": 3, "d": 3, "short-1": 2, "unique-1": 1, "unique-2": 1}
    clusters = dict(zip(kept.column("id").to_pylist(), kept.column("dup_cluster").to_pylist()))
    assert clusters["unique-1"] == "unique-1" and clusters["a"] == "a"
    dup_of = dict(zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist()))
    assert dup_of == {m: k for k, members in expected.items() for m in members if m != k}
    reasons = dict(zip(removed.column("id").to_pylist(), removed.column(S.DROP_REASON).to_pylist()))
    assert reasons["d-copy"] == "exact_duplicate" and reasons["d-COPY-upper"] == "exact_duplicate"  # case-folded
    assert reasons["b"] == reasons["c"] == reasons["short-2"] == "near_duplicate"
    stats = json.loads((out / "_stats.json").read_text())
    assert stats["dedup"]["clusters"] == 3 and stats["dedup"]["cluster_size_histogram"] == {"2": 1, "3": 2}


def test_determinism_across_partitions_and_workers(tmp_path):
    base = CurateConfig(stages=["dedup"])
    one_at_a_time = base.model_copy(update={"ray": base.ray.model_copy(update={"max_shards_in_flight": 1})})
    _, kept1, removed1, _ = run_dedup(tmp_path, "one", one_at_a_time)
    other = CurateConfig(stages=["dedup"], dedup={"partitions": 3}, ray={"max_shards_in_flight": 4})
    _, kept2, removed2, _ = run_dedup(tmp_path, "many", other)
    assert kept1.sort_by("id").equals(kept2.sort_by("id"))

    def without_store(removed):
        """Drop details name each run's own input shard (under its store): compare shard names only."""
        removed = removed.sort_by("id")
        shards = [d.rsplit("/", 1)[1] for d in removed.column("drop_detail").to_pylist()]
        return removed.drop_columns(["drop_detail", "drop_shard"]), shards

    assert without_store(removed1)[0].equals(without_store(removed2)[0])
    assert without_store(removed1)[1] == without_store(removed2)[1]


def test_keep_rule_longest(tmp_path):
    text = prose(5, 30)
    rows = [[{"id": "aaa-short", "text": text}], [{"id": "zzz-long", "text": text + " And one more short line."}]]
    config = CurateConfig(stages=["dedup"], dedup={"keep": {"rule": "longest"}, "exact": {"enabled": True}})
    summary, kept, removed, _ = run_dedup(tmp_path, "longest", config, rows)
    assert kept.column("id").to_pylist() == ["zzz-long"] and kept.column("dup_count").to_pylist() == [2]
    assert removed.column("duplicate_of").to_pylist() == ["zzz-long"]


def test_keep_rule_highest_reads_a_score_column(tmp_path):
    from flows.curate import curate

    text = prose(9, 30)
    table = pa.table(
        {
            "id": ["x1", "x2", "x3"],
            "text": [text, text, prose(10, 30)],
            "source": ["s"] * 3,
            "url": [None] * 3,
            "meta": [None] * 3,
            "quality_demo": [0.2, 0.9, 0.5],
        }
    )
    (tmp_path / "pool").mkdir()
    pq.write_table(table, tmp_path / "pool" / "part-00000.parquet")
    config = CurateConfig(stages=["dedup"], dedup={"keep": {"rule": "highest", "column": "quality_demo"}})
    summary = curate(input=str(tmp_path / "pool"), output=str(tmp_path / "store"), config=config)
    assert [s["name"] for s in summary["stages"]] == ["dedup"]  # contract input: no normalize
    kept = pq.read_table(os.path.join(summary["output"], "part-00000.parquet"))
    assert sorted(kept.column("id").to_pylist()) == ["x2", "x3"]


def test_empty_and_tiny_documents_have_a_defined_outcome(tmp_path):
    rows = [
        [{"id": "one-word", "text": "hello"}, {"id": "one-word-2", "text": "hello"}, {"id": "other", "text": "world"}]
    ]
    summary, kept, removed, _ = run_dedup(tmp_path, "tiny", CurateConfig(stages=["dedup"]), rows)
    assert sorted(kept.column("id").to_pylist()) == ["one-word", "other"]
    assert removed.column("id").to_pylist() == ["one-word-2"]


def test_failed_partition_is_retried_without_double_counting(tmp_path):
    """A dedup run killed after its edge step resumes from the files already written."""
    from mixforge.dedup.composite import run_dedup as dedup_stage
    from mixforge.dedup.composite import work_dir
    from mixforge.dedup.layouts import DedupLayout
    from mixforge.executor import SerialExecutor
    from mixforge.runs import StageLayout

    summary, kept, removed, out = run_dedup(tmp_path, "resume", CurateConfig(stages=["dedup"]))
    assert not (out / "_work").exists()  # the stage's scratch goes once it has finished
    # The same stage with its work files kept, then a crash after clustering simulated: the apply
    # step's outputs, the stage's stats and one partition's edges are gone.
    config = CurateConfig(stages=["dedup"])
    inputs = [(i, str(p)) for i, p in enumerate(sorted((out.parent / "normalize").glob("part-*.parquet")))]
    layout = StageLayout(str(tmp_path / "killed" / "dedup"))
    dedup_stage(layout, "killed", inputs, config, SerialExecutor(), keep_work=True)
    work = DedupLayout(layout.dir)
    for p in [*glob.glob(f"{layout.dir}/part-*.parquet"), *glob.glob(f"{layout.dir}/_done/*.json"), layout.stats]:
        os.remove(p)
    for p in (work.edges_done(0), work.edges(0, 1), work.verified_done(1), work.clustered):
        os.remove(p)
    again = dedup_stage(layout, "killed", inputs, config, SerialExecutor())
    assert again["docs_in"] == 10 and again["docs_kept"] == 5  # counted once
    kept2 = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(f"{layout.dir}/part-*.parquet"))])
    assert kept2.sort_by("id").equals(kept.sort_by("id"))
    assert not os.path.exists(work_dir(layout))


def test_incremental_dedup_against_a_persistent_index(tmp_path, s3_bucket):
    """Night 1 builds the index; night 2 deduplicates only new shards against it (on S3)."""
    import s3fs

    from flows.curate import curate

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    old = prose(21, 30)
    night1 = [
        [{"id": "n1-a", "text": old}, {"id": "n1-b", "text": prose(22, 30)}],
        [{"id": "n1-c", "text": prose(23, 30)}, {"id": "n1-a-copy", "text": old}],
    ]
    night2 = [
        [
            {"id": "n2-x", "text": replace_words(old, [5, 50, 95], "z")},  # near-dup of the pool
            {"id": "n2-y", "text": prose(24, 30)},
        ],
        [{"id": "n2-y-copy", "text": prose(24, 30)}, {"id": "n2-z", "text": prose(25, 30).upper()}],
    ]
    config = CurateConfig(stages=["dedup"], storage={"options": opts}, dedup={"index": f"{root}/dedup-index"})
    summaries = []
    for night, rows in (("night1", night1), ("night2", night2)):
        for i, shard in enumerate(rows):
            write_shard(f"{root}/{night}/s{i}.jsonl".removeprefix("s3://"), shard, fs)
        summaries.append(curate(input=f"{root}/{night}/", output=f"{root}/store", config=config))
    first, second = (s["stages"][-1] for s in summaries)
    assert (first["docs_in"], first["docs_kept"]) == (4, 3)
    assert first["index"]["segment"] == 1 and first["index"]["docs_added"] == 3
    assert (second["docs_in"], second["docs_kept"]) == (4, 2)
    assert second["dedup"]["index_segments_used"] == 1 and second["dedup"]["duplicates_of_indexed"] == 1
    fs.invalidate_cache()
    removed_files = fs.glob(f"{second['output']}/_removed/*.parquet")
    removed = pa.concat_tables([pq.ParquetFile(fs.open(p)).read() for p in removed_files])
    dup_of = dict(zip(removed.column("id").to_pylist(), removed.column("duplicate_of").to_pylist()))
    assert dup_of == {"n2-x": "n1-a", "n2-y-copy": "n2-y"}  # the pool's document wins over a new one
    assert second["index"]["segment"] == 2 and second["index"]["docs_added"] == 2
    # An index refuses runs with settings its signatures are not comparable with.
    other = config.model_copy(update={"dedup": config.dedup.model_copy(update={"partitions": 4})})
    with pytest.raises(ValueError, match="other settings"):
        curate(input=f"{root}/night2/", output=f"{root}/store2", config=other)


def test_boilerplate_lines_are_removed_not_the_documents(tmp_path):
    footer = "Copyright 2026 Example Media Group. All rights reserved. Terms of use apply."
    rows = [
        [{"id": f"page-{i}", "text": f"{prose(100 + i, 20)}\n{footer}"} for i in range(6)],
        [{"id": "no-footer", "text": prose(200, 20)}],
    ]
    config = CurateConfig(stages=["dedup"], dedup={"boilerplate": {"enabled": True, "min_docs": 5}})
    summary, kept, removed, out = run_dedup(tmp_path, "boiler", config, rows)
    stage = summary["stages"][-1]
    assert stage["docs_kept"] == 7 and removed.num_rows == 0  # no document removed
    assert all(footer not in t for t in kept.column("text").to_pylist())
    assert stage["counters"]["boilerplate.lines_removed"] == 6 and stage["counters"]["boilerplate.docs_edited"] == 6
    assert stage["dedup"]["boilerplate_lines"] == 1
