"""`mixforge explain`: one document's path through a run built in this process (normalize, filter, dedup
with SerialExecutor, then a real mixture build), read back through the CLI, checked against its schema."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import jsonschema
import pytest

from mixforge import cli, runs
from mixforge.config import CurateConfig
from mixforge.dedup.composite import run_dedup
from mixforge.executor import SerialExecutor
from mixforge.mixtures.build import build_mixture
from mixforge.mixtures.spec import MixSpec
from mixforge.runner import completed_outputs, run_stage
from mixforge.stages.filter import Filter
from mixforge.stages.normalize import run_normalize
from mixforge.storage import discover_shards
from tests.helpers import REPO, prose, write_shard

RUN = "run-explain"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("explain")
    copy = prose(3, 14)
    shards = [
        [
            {"id": "keep", "text": prose(1, 14)},
            {"id": "short", "text": "Far too short."},
            {"id": "dup-a", "text": copy},
        ],
        [{"id": "dup-b", "text": copy}, {"id": "other", "text": prose(2, 14)}],
    ]
    for i, rows in enumerate(shards):
        write_shard(str(root / "raw" / f"s{i}.jsonl"), rows)
    config = CurateConfig(stages=["normalize", "filter", "dedup"], filter={"language_id": {"enabled": False}})
    found = discover_shards(str(root / "raw"))
    layout, _ = runs.open_run(str(root / "store"), found, config.model_dump(mode="json"), run_id=RUN)
    inputs = [(i, s.uri) for i, s in enumerate(found)]
    normalized = run_normalize(layout.stage("normalize"), inputs, config, SerialExecutor())
    filtered = run_stage(
        Filter(config.filter), layout.stage("filter"), completed_outputs(layout.stage("normalize"), normalized)
    )
    run_dedup(
        layout.stage("dedup"), RUN, completed_outputs(layout.stage("filter"), filtered), config, SerialExecutor()
    )
    spec = {
        "name": "explained",
        "pool": [layout.stage("dedup").dir],
        "store": str(root / "store"),
        "seed": 0,
        "budget_fraction": 1.0,
        "licenses": {"s0": "CC0-1.0", "s1": "CC0-1.0"},
        "groups": [{"name": "all", "where": {}, "weight": 1.0}],
    }
    build_mixture(MixSpec.model_validate(spec))
    return str(root / "store")


def explain(store: str, doc_id: str, *extra: str) -> tuple[int, dict]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["explain", "--store", store, "--run", RUN, doc_id, "--json", *extra])
    result = json.loads(out.getvalue())
    name = "explain" if code == 0 else "failure"
    jsonschema.validate(result, json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text()))
    return code, result


def test_a_filtered_document_says_stage_rule_value_and_threshold(store):
    code, result = explain(store, "short")
    assert code == 0 and result["outcome"] == "dropped"
    by_stage = {s["name"]: s for s in result["stages"]}
    assert [s["name"] for s in result["stages"]] == ["normalize", "filter", "dedup"]
    assert by_stage["normalize"]["outcome"] == "kept" and by_stage["dedup"]["outcome"] == "not reached"
    drop = by_stage["filter"]["drop"]
    # the first failing rule in check order (gopher_quality.word_count fails too, later)
    assert drop["reason"] == drop["rule"] == "gopher_repetition.top_2_gram"
    assert (drop["value"], drop["op"], drop["threshold"]) == (0.5, ">", 0.2)
    assert drop["shard"].endswith("normalize/part-00000.parquet") and drop["row"] == 1 and drop["unit"] == "row"
    assert drop["detail"] == f"{drop['shard']} row 1: gopher_repetition.top_2_gram: 0.5 > 0.2"
    assert result["mixtures"] == [] and result["duplicate_cluster"] is None


def test_a_duplicate_names_the_document_kept_for_its_cluster(store):
    code, dropped = explain(store, "dup-b")
    assert code == 0 and dropped["outcome"] == "dropped"
    dedup = dropped["stages"][-1]
    assert dedup["name"] == "dedup" and dedup["drop"]["reason"] == "exact_duplicate"
    assert "exact_duplicate of 'dup-a' (cluster of 2)" in dedup["drop"]["detail"]
    assert dropped["duplicate_cluster"] == {"cluster": "dup-a", "size": 2, "kept": "dup-a", "dropped": ["dup-b"]}

    code, kept = explain(store, "dup-a")
    assert code == 0 and kept["outcome"] == "kept"
    assert kept["duplicate_cluster"] == dropped["duplicate_cluster"]
    assert kept["stages"][-1]["columns"] == {"dup_cluster": "dup-a", "dup_count": 2}
    assert kept["mixtures"] == [{"name": "explained", "version": "v0001"}]


def test_a_kept_document_shows_the_columns_each_stage_added(store):
    code, result = explain(store, "keep")
    assert code == 0 and result["outcome"] == "kept"
    filter_stage = result["stages"][1]
    assert filter_stage["outcome"] == "kept" and "gopher_quality_n_words" in filter_stage["columns"]
    assert "text" not in filter_stage["columns"] and result["mixtures"][0]["name"] == "explained"


def test_an_unknown_document_or_run_is_a_usage_error_naming_the_run(store):
    code, failure = explain(store, "no-such-doc")
    assert code == 2 and failure["error_kind"] == "usage" and RUN in failure["error"]
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["explain", "--store", store, "--run", "run-missing", "keep"]) == 2
