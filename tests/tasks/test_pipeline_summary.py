"""The pipeline's night summary (tasks/pipeline_summary.py): counts summed over the curate run's
stages, and the headline of a night that built a version and of a no-op night. The artifact on a
real server's pipeline run is checked in tests/deployments/test_deployments.py."""

from __future__ import annotations

from tasks.pipeline_summary import curate_counts, night_headline, night_markdown


def stage(name, docs_in, kept, dropped, quarantined=0):
    return {
        "name": name,
        "docs_in": docs_in,
        "docs_kept": kept,
        "docs_dropped": dropped,
        "docs_quarantined": quarantined,
    }


CURATED = {
    "run_id": "night-1",
    "incremental": {"input_shards": 3, "already_curated": 1, "new_shards": 2},
    "stages": [
        stage("normalize", 100, 97, {"empty_text": 2, "invalid_json": 1}, quarantined=None),
        stage("filter", 97, 80, {"gopher_quality.stop_words": 12, "lang": 5}),
        stage("dedup", 80, 70, {"duplicate": 10}, quarantined=4),
    ],
}


def test_a_night_that_built_a_version(tmp_path):
    card = tmp_path / "mixtures" / "nightly" / "v0002" / "README.md"
    result = {
        **CURATED,
        "noop": False,
        "pool": ["a", "b"],
        "mixture": {
            **{"name": "nightly", "version": "v0002", "built": True},
            **{"tokens": 12345, "docs": 70, "files": 1, "card": str(card)},
        },
    }
    counts = curate_counts(result)
    assert counts == {
        "docs_in": 100,
        "docs_kept": 70,
        "docs_dropped": 30,
        "dropped_by_reason": {
            "gopher_quality.stop_words": 12,
            "duplicate": 10,
            "lang": 5,
            "empty_text": 2,
            "invalid_json": 1,
        },
        "docs_quarantined": 4,
    }
    assert night_headline(result, "nightly") == "mixture nightly v0002 built"
    markdown = night_markdown(result, "nightly")
    assert markdown.startswith("# mixture nightly v0002 built\n")
    assert "| 100 | 70 | 30 | 4 |" in markdown  # one column per number
    assert "| `gopher_quality.stop_words` | 12 |" in markdown
    assert "| nightly | v0002 | yes | 12,345 | 70 | 1 | 2 |" in markdown
    assert f"`{card}`" in markdown  # a local card: its path, to copy
    assert "Input shards: 3, new: 2, already curated: 1." in markdown


def test_a_no_op_night_names_the_version_still_current():
    result = {
        "run_id": None,
        "stages": [],
        "incremental": {"input_shards": 3, "already_curated": 3, "new_shards": 0},
        "noop": True,
        "message": "nothing new under /in; mixture nightly v0001 already covers the pool (1 run(s))",
        "pool": ["a"],
        "mixture": {"name": "nightly", "version": "v0001", "built": False},
    }
    markdown = night_markdown(result, "nightly")
    assert markdown.startswith("# nothing new, nightly v0001 still current\n")
    assert result["message"] in markdown
    assert "| 0 | 0 | 0 | 0 |" in markdown and "dropped because" not in markdown
    assert "| nightly | v0001 | no |" in markdown
    assert night_headline({**result, "mixture": None}, "nightly") == "nothing new, nothing curated yet"
