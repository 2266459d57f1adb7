"""The optimize flow as people run it (the `optimize` deployment, `mixforge optimize`): a tiny swarm of
proxies as Ray tasks (a real local Ray) in a real Prefect flow, its artifacts (proxies table, report with
plots) and the proposal materialised as a new mixture version; a spec from the UI with relative paths
is refused. Resume after a kill: tests/mixforge/optimize/test_run.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixforge.config_errors import ConfigError
from mixforge.mixtures.versions import read_manifest
from mixforge.optimize.search import SearchSpec, load_search_spec
from tests.flows.test_curate_flow import artifacts_for
from tests.mixforge.optimize.test_run import write_pool, write_search, write_target

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.mark.usefixtures("ray_local")
def test_optimize_flow_publishes_its_report_and_materializes_the_proposal(tmp_path, monkeypatch):
    from flows.optimize import optimize

    monkeypatch.delenv("MIXFORGE_EXECUTOR", raising=False)  # the flow's executor: Ray (a cluster's way)
    root = str(tmp_path)
    write_pool(root, {"prose": 120, "code": 60, "numbers": 30})
    write_target(root, "held-out", {"prose": 12, "code": 4})
    search = load_search_spec(write_search(root))
    summary = optimize(search=search, materialize=True)

    assert set(summary["proposal"]) == {"prose", "code", "numbers"}
    assert summary["proposal"] == pytest.approx(json.loads(json.dumps(summary["proposal"])))
    assert abs(sum(summary["proposal"].values()) - 1) < 1e-6 and summary["proxies"] == 6
    # the Prefect UI: every proxy's weights and losses; the report with its plots embedded
    rows = artifacts_for("optimize-find-mix")[0].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert len(rows) == 6 and {"weight_prose", "loss_held-out"} <= set(rows[0])
    report = artifacts_for("optimize-find-mix-report")[0].data
    assert "| prose |" in report and report.count("data:image/png;base64,") >= 1
    for plot in ("loss_vs_weight.png", "predicted_vs_actual.png"):
        assert (Path(summary["uri"]) / "plots" / plot).stat().st_size > 1000
    assert report.count("data:image/png;base64,") == 2
    # the proposal as a new version whose manifest links the run
    mixed = summary["materialized"]
    manifest = read_manifest(search.mixture_spec().store, mixed["name"], mixed["version"])
    assert manifest["provenance"]["optimization"]["manifest"] == summary["manifest"]
    assert "optimisation" in Path(mixed["card"]).read_text().lower()


def test_a_search_spec_from_the_ui_needs_absolute_paths(tmp_path):
    from flows.optimize import optimize

    spec = SearchSpec.model_validate(
        {"name": "ui-search", "mixture": "specs/mix.yaml", "targets": [{"name": "t", "uri": "eval/t.parquet"}]}
    )
    with pytest.raises(
        ConfigError, match=r"absolute paths or URIs; relative: mixture: 'specs/mix.yaml'.*targets\[0\]"
    ):
        optimize(search=spec)
