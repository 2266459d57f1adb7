"""Typed contracts (mixforge.contracts): the committed JSON Schemas match the models, required keys
are enforced by both, and what the real CLI prints with --json validates against the committed
schema of its command (subprocesses over tiny inputs, as a script would run them)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mixforge import cli, contracts, lease
from mixforge.runner import summarize_stage
from tests.helpers import REPO, docs, prose_docs, write_shard

SCHEMAS = REPO / "docs" / "schemas"
ENV = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_AUTH_MODE": "disabled"}


def committed(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def assert_valid(name: str, value) -> None:
    """`value` passes the committed schema `name` and the model behind it."""
    errors = _messages(committed(name).iter_errors(value))
    assert not errors, f"{name}: {errors}"
    contracts.validate(value, contracts.SCHEMAS[name][0])


def _messages(errors) -> list[str]:
    """Each error as `path: message`, with the errors of a union's branches (oneOf/anyOf) too."""
    out = []
    for e in errors:
        out.append(f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
        out.extend(_messages(e.context or []))
    return out


def assert_invalid(name: str, value, fragment: str) -> None:
    """Both the committed schema and the model refuse `value`, naming `fragment`."""
    errors = _messages(committed(name).iter_errors(value))
    assert errors and any(fragment in m for m in errors), errors
    with pytest.raises(contracts.ContractViolation, match=fragment):
        contracts.validate(value, contracts.SCHEMAS[name][0])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True, env=ENV, timeout=600, cwd=REPO
    )


def json_stdout(proc: subprocess.CompletedProcess, exit_code: int = 0) -> dict:
    assert proc.returncode == exit_code, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # exactly one JSON object: json.loads refuses anything after it


# ----------------------------------------------------------------------------- schemas vs models


def test_committed_schemas_match_the_models():
    assert contracts.stale_schemas(SCHEMAS) == [], "run: python -m mixforge.contracts"
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(f"{n}.schema.json" for n in contracts.SCHEMAS)
    for name in contracts.SCHEMAS:
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def test_the_check_command_finds_a_drifted_schema(tmp_path):
    contracts.write_schemas(tmp_path)
    check = [sys.executable, "-m", "mixforge.contracts", "--check", "--dir", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, text=True, cwd=REPO).returncode == 0
    drifted = json.loads((tmp_path / "failure.schema.json").read_text())
    drifted["required"].remove("exit_code")
    (tmp_path / "failure.schema.json").write_text(json.dumps(drifted, indent=2) + "\n")
    proc = subprocess.run(check, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "failure.schema.json: out of date" in proc.stderr


def test_contract_keys_are_required():
    required = {
        name: set(committed(name).schema["required"])
        for name in ("curate-summary", "failure", "train-classifier", "mix", "runs-unlock", "demo")
    }
    assert required["curate-summary"] == {"run_id", "output", "stages"}
    assert required["demo"] == {"run_id", "output", "stages", "mixture"}
    assert required["failure"] == {"command", "error", "error_kind", "exit_code"}
    assert required["train-classifier"] == {"model", "metrics"}
    assert required["mix"] == {"name", "version", "uri", "manifest", "groups"}
    defs = committed("curate-summary").schema["$defs"]
    assert set(defs["StageSummary"]["required"]) == {
        "name",
        "output",
        "docs_in",
        "docs_kept",
        "docs_dropped",
        "docs_quarantined",
        "quarantined",
        "seconds",
    }
    assert set(defs["QuarantinedShard"]["required"]) == {"shard", "error", "rows_decoded", "rows_declared"}
    assert set(committed("mix").schema["$defs"]["MixGroup"]["required"]) == {
        "name",
        "target_share",
        "realised_share",
        "docs",
        "tokens",
        "epochs",
    }
    assert set(committed("train-classifier").schema["$defs"]["ClassifierMetrics"]["required"]) == {
        "auc",
        "precision",
        "recall",
    }


# ----------------------------------------------------------------------------- negative cases


def _stage_summary() -> dict:
    """A stage summary as the shard runner builds it: one finished shard, one quarantined."""
    done = {
        "index": 0,
        "input": "raw/a.jsonl",
        "output": "runs/r/filter/part-00000.parquet",
        "quarantined": False,
        "docs_in": 5,
        "docs_kept": 3,
        "docs_dropped": {"lang": 2},
        "docs_skipped": {},
        "chars_in": 500,
        "chars_kept": 300,
        "chars_dropped": {"lang": 200},
        "counters": {},
        "drop_order": ["lang"],
        "seconds": 0.5,
        "cpu_seconds": 0.4,
        "peak_rss_mb": 200.0,
        "worker": "host:1",
        "started_at": 1_700_000_000.0,
    }
    bad = {
        "index": 1,
        "input": "raw/b.jsonl.zst",
        "quarantined": True,
        "error": "truncated zstd frame at byte 1024",
        "rows_decoded": 7,
        "rows_declared": None,
        "seconds": 0.1,
    }
    for shard in (done, bad):
        contracts.validate(shard, contracts.ShardStats)
    return summarize_stage("filter", "runs/r/filter", [done, bad], 1.25)


def _curate_summary() -> dict:
    return {
        "run_id": "r",
        "output": "runs/r/filter",
        "resumed": False,
        "inputs": {"pattern": "raw", "shards": 2, "skipped": [], "metadata_skipped": 0},
        "stages": [_stage_summary()],
    }


def test_a_real_stage_summary_is_valid_and_keys_may_be_added():
    summary = _curate_summary()
    assert summary["stages"][0]["docs_quarantined"] is None  # a JSONL shard declares no row count: null is allowed
    assert_valid("curate-summary", summary)
    assert_valid("stage-stats", summary["stages"][0])
    assert_valid("curate-summary", {**summary, "a_key_added_later": {"anything": [1, 2]}})


@pytest.mark.parametrize("key", ["run_id", "output", "stages"])
def test_a_summary_missing_a_required_key_fails(key):
    summary = _curate_summary()
    del summary[key]
    assert_invalid("curate-summary", summary, key)


@pytest.mark.parametrize(
    "key", ["name", "output", "docs_in", "docs_kept", "docs_dropped", "docs_quarantined", "quarantined", "seconds"]
)
def test_a_stage_missing_a_required_key_fails(key):
    summary = _curate_summary()
    del summary["stages"][0][key]
    assert_invalid("curate-summary", summary, key)


def test_a_quarantine_entry_without_its_ledger_fails():
    summary = _curate_summary()
    del summary["stages"][0]["quarantined"][0]["rows_decoded"]
    assert_invalid("curate-summary", summary, "rows_decoded")


@pytest.mark.parametrize(
    "path,value,fragment",
    [
        (("stages", 0, "docs_in"), "5", "docs_in"),  # a count as a string
        (("stages", 0, "docs_dropped", "lang"), 2.5, "lang"),  # a count as a float
        (("stages", 0, "docs_kept"), None, "docs_kept"),  # required and not nullable
        (("stages", 0, "funnel"), None, "funnel"),  # optional: may be absent, but not null
        (("resumed",), "no", "resumed"),
    ],
)
def test_a_summary_with_a_wrong_type_fails(path, value, fragment):
    summary = _curate_summary()
    target = summary
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    assert_invalid("curate-summary", summary, fragment)


def test_failure_objects_of_the_cli_are_valid_and_a_bad_kind_is_not():
    failure = cli._failure("curate", "usage", "--input 'x': no input found", 2, errors=["--input 'x': no input found"])
    assert_valid("failure", failure)
    assert_valid("failure", cli._failure(None, "usage", "mixforge: invalid choice", 2))
    assert_invalid("failure", {**failure, "error_kind": "oops"}, "error_kind")
    assert_invalid("failure", {k: v for k, v in failure.items() if k != "exit_code"}, "exit_code")


def test_a_contract_break_is_raised_and_stdout_stays_one_failure_object(capsys):
    broken = _curate_summary()
    del broken["stages"][0]["docs_kept"]
    with pytest.raises(contracts.ContractViolation, match=r"stages\.0\.docs_kept: Field required"):
        cli._print_summary(broken, as_json=True)
    printed = json.loads(capsys.readouterr().out)  # one JSON object, and not the broken summary
    assert_valid("failure", printed)
    assert printed["error_kind"] == "failed" and "docs_kept" in printed["error"]
    # the text output is not held to the JSON contract
    cli._print_summary(_curate_summary(), as_json=False)
    assert "curated shards: runs/r/filter" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the real CLI


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store made by the real CLI: `filter` over a 5-row shard, then `mix` over its output."""
    root = tmp_path_factory.mktemp("contracts")
    write_shard(str(root / "raw" / "a.jsonl"), prose_docs(5))
    filtered = json_stdout(
        run_cli("filter", "--input", str(root / "raw"), "--output", str(root / "store"), "--json", "-q")
    )
    spec = root / "tiny.yaml"
    spec.write_text(
        f"name: tiny\npool: [{filtered['output']}]\nstore: {root / 'store'}\nseed: 0\nbudget_fraction: 0.5\n"
        "groups:\n  - name: all\n    where: {}\n    weight: 1.0\n    max_epochs: 2\n"
    )
    mixed = json_stdout(run_cli("mix", "--spec", str(spec), "--json", "-q"))
    return {"root": root, "store": str(root / "store"), "filter": filtered, "mix": mixed, "spec": spec}


def test_stage_command_json_matches_its_schema(store):
    summary = store["filter"]
    assert_valid("curate-summary", summary)
    assert [s["name"] for s in summary["stages"]] == ["normalize", "filter"]
    assert summary["stages"][-1]["docs_in"] == 5 and summary["stages"][-1]["quarantined"] == []
    run = Path(store["store"]) / "runs" / summary["run_id"]
    for stage in ("normalize", "filter"):  # the files in the store, too
        assert_valid("stage-stats", json.loads((run / stage / "_stats.json").read_text()))
        markers = sorted((run / stage / "_done").glob("*.json"))
        assert markers
        for marker in markers:
            assert_valid("shard-marker", json.loads(marker.read_text()))


def test_mix_and_mixtures_commands_json_match_their_schemas(store):
    from mixforge.mixtures.build import build_mixture
    from mixforge.mixtures.spec import load_spec

    mixed = store["mix"]
    assert_valid("mix", mixed)
    assert mixed["version"] == "v0001" and [g["name"] for g in mixed["groups"]] == ["all"]
    assert_valid("mixture-manifest", json.loads(Path(mixed["manifest"]).read_text()))
    second = build_mixture(load_spec(str(store["spec"])))  # a second version (in-process) for the diff
    assert second["version"] == "v0002"

    s = store["store"]
    listed = json_stdout(run_cli("mixtures", "list", "--store", s, "--json"))
    assert_valid("mixtures-list", listed)
    assert [r["version"] for r in listed["versions"]] == ["v0001", "v0002"]
    shown = json_stdout(run_cli("mixtures", "show", "tiny", "v0001", "--store", s, "--json"))
    assert_valid("mixtures-show", shown)
    assert_valid("mix", shown)
    files = json_stdout(run_cli("mixtures", "show", "tiny", "--files", "--store", s, "--json"))
    assert_valid("mixtures-show", files)
    assert files["version"] == "v0002" and all(f.endswith(".parquet") for f in files["files"])
    diffed = json_stdout(run_cli("mixtures", "diff", "tiny", "v0001", "v0002", "--store", s, "--json"))
    assert_valid("mixtures-diff", diffed)
    assert diffed["docs_added"] == diffed["docs_removed"] == 0  # same spec, same seed: the same documents


def test_export_and_lineage_commands_json_match_their_schemas(store):
    s = store["store"]
    exported = json_stdout(run_cli("export", "--store", s, "tiny", "v0001", "--format", "npy", "--json", "-q"))
    assert_valid("export", exported)
    assert exported["docs"] == store["mix"]["docs"] and exported["format"] == "npy"
    assert_valid("export-manifest", json.loads(Path(exported["manifest"]).read_text()))
    found = json_stdout(run_cli("lineage", "--store", s, "tiny", "v0001", "--file", "0", "--token", "0", "--json"))
    assert_valid("lineage", found)
    # a bad setting is a usage failure before any work: one JSON object naming it
    bad = json_stdout(run_cli("export", "--store", s, "tiny", "--format", "safetensors", "--json"), exit_code=2)
    assert_valid("failure", bad)
    assert "safetensors" in bad["error"] and "megatron" in bad["error"]


def test_runs_unlock_json_matches_its_schema(store):
    run_id = store["filter"]["run_id"]
    run_dir = str(Path(store["store"]) / "runs" / run_id)
    held = lease.acquire(run_dir, run_id, store["store"], heartbeat=False)  # a holder to release
    released = json_stdout(run_cli("runs", "unlock", run_id, "--store", store["store"], "--json"))
    assert_valid("runs-unlock", released)
    assert released["released"] is True and released["holder"]["pid"] == held.record["pid"]
    again = json_stdout(run_cli("runs", "unlock", run_id, "--store", store["store"], "--json"))
    assert_valid("runs-unlock", again)
    assert again == {"run_id": run_id, "released": False, "holder": None}


def test_failures_json_match_the_failure_schema(store, tmp_path):
    unparsable = json_stdout(run_cli("no-such-command", "--json"), exit_code=2)
    assert_valid("failure", unparsable)
    assert unparsable["command"] is None and unparsable["error_kind"] == "usage"

    missing = json_stdout(
        run_cli("filter", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "s"), "--json"), exit_code=2
    )
    assert_valid("failure", missing)
    assert missing["command"] == "filter" and missing["errors"]

    spec = tmp_path / "weightless.yaml"  # a spec error: one line per problem, exit 2
    spec.write_text(
        f"name: tiny\npool: [{store['filter']['output']}]\nstore: {store['store']}\n"
        "budget_fraction: 0.5\ngroups:\n  - name: all\n    where: {}\n"
    )
    refused = json_stdout(run_cli("mix", "--spec", str(spec), "--json"), exit_code=2)
    assert_valid("failure", refused)
    assert "have no weight" in refused["error"]

    gone = json_stdout(run_cli("mixtures", "show", "absent", "--store", store["store"], "--json"), exit_code=2)
    assert_valid("failure", gone)


def test_train_classifier_json_and_its_model_card_match_their_schemas(tmp_path):
    write_shard(str(tmp_path / "pos" / "a.jsonl"), prose_docs(60, "pos"))
    write_shard(str(tmp_path / "neg" / "a.jsonl"), docs(60, "neg"))
    config = tmp_path / "train.yaml"
    config.write_text(
        "test_fraction: 0.25\nfasttext: {dim: 16, bucket: 20000, epoch: 15, thread: 1, minCount: 1}\n"
    )  # as test_classify
    summary = json_stdout(
        run_cli(
            "train-classifier",
            "--positive",
            str(tmp_path / "pos"),
            "--negative",
            str(tmp_path / "neg"),
            "--name",
            "prose",
            "--output",
            str(tmp_path / "store"),
            "--config",
            str(config),
            "--json",
            "-q",
        )
    )
    assert_valid("train-classifier", summary)
    assert summary["version"] == "v0001" and 0.0 <= summary["metrics"]["precision"] <= 1.0
    card = json.loads((Path(summary["model"]) / "card.json").read_text())
    assert_valid("model-card", card)
    assert card["kind"] == "binary-quality"
    assert_invalid("model-card", {k: v for k, v in card.items() if k != "files"}, "files")


def test_demo_json_matches_its_schema(tmp_path):
    summary = json_stdout(run_cli("demo", "--output", str(tmp_path / "data"), "--json", "-q"))
    assert_valid("demo", summary)
    assert summary["mixture"]["name"] == "demo" and summary["mixture"]["built"] is True
    assert summary["stages"][0]["name"] == "normalize" and summary["stages"][0]["docs_in"] > 3000
    for manifest in glob.glob(str(tmp_path / "data" / "mixtures" / "demo" / "v*" / "manifest.json")):
        assert_valid("mixture-manifest", json.loads(Path(manifest).read_text()))


def test_every_json_output_has_a_schema():
    """The schemas cover each --json printer (a new command needs its contract)."""
    outputs = {
        "curate-summary",
        "failure",
        "train-classifier",
        "mix",
        "mixtures-list",
        "mixtures-show",
        "mixtures-diff",
        "runs-unlock",
        "runs-list",
        "runs-show",
        "runs-clean",
        "explain",
        "mix-plan",
        "demo",
        "export",
        "lineage",
        "optimize",
    }
    assert outputs <= set(contracts.SCHEMAS)
    assert committed("demo").schema["properties"]["mixture"] == {"$ref": "#/$defs/MixSummary"}
