"""Mixtures as a user meets them: `mix --dry-run`, requested beside effective shares, `mixtures diff`
naming spec fields, spec paths relative to the spec file, misspelt predicates refused. Real parts:
Parquet pools on disk, tiktoken, the `mixforge` CLI (in-process, and once as a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mixforge.mixtures import build as B
from mixforge.mixtures import card
from mixforge.mixtures.cli_commands import print_diff, print_mix
from mixforge.mixtures.preflight import PreflightError, check_spec
from mixforge.mixtures.spec import MixSpec, load_spec
from mixforge.mixtures.versions import diff, spec_changes, tidy_floats
from tests.helpers import REPO
from tests.mixforge.mixtures.test_mixtures import make_spec, write_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> str:
    return write_pool(str(tmp_path_factory.mktemp("pool")))


def listing(root) -> list[tuple[str, int, int]]:
    """Every file under `root` with its size and modification time."""
    out = []
    for folder, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            out.append((os.path.relpath(os.path.join(folder, name), root), st.st_size, st.st_mtime_ns))
    return sorted(out)


def spec_file(folder, **spec) -> str:
    """A spec YAML in `folder` (its relative paths are relative to that folder)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "mix.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    return path


SPEC = {
    "name": "dry",
    "seed": 7,
    "budget_tokens": 30_000,
    "output": {"shard_tokens": 15_000, "row_group_rows": 100},
    "groups": [
        {"name": "web", "where": {"source": "web", "synthetic": False}, "weight": 0.5},
        {"name": "books", "where": {"source": "books"}, "weight": 0.3, "max_epochs": 2},
        {"name": "code", "where": {"source": "code"}, "weight": 0.2},
    ],
}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from mixforge.cli import main

    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ----------------------------------------------------------------------------- mix --dry-run


def test_dry_run_prints_the_exact_plan_and_writes_nothing(tmp_path, capsys):
    # the pool inside the store, with no cached token counts: a dry run must not leave any beside it
    store = tmp_path / "store"
    write_pool(str(store))
    spec = spec_file(tmp_path / "specs", pool="../store/runs/run-test/dedup/", store="../store", **SPEC)
    before = listing(store)

    # as a user runs it: its own process, so we can see what it imported
    script = (
        "import json, sys; from mixforge.cli import main; rc = main(sys.argv[1:]); "
        "sys.stderr.write('\\nMODULES ' + json.dumps({m: m in sys.modules for m in ('ray', 'flows.mix')}) + '\\n'); "
        "sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "mix", "--spec", spec, "--dry-run", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,  # not the spec's folder: its relative paths still mean the spec's store
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)  # one JSON object (validated against the mix-plan contract before printing)
    modules = json.loads(proc.stderr.rsplit("MODULES ", 1)[1])
    assert modules == {"ray": False, "flows.mix": False}  # planned in-process: no Ray, no flow
    assert listing(store) == before  # nothing written: no version, no scratch, no token-count sidecar
    assert plan["dry_run"] is True and plan["next_version"] == "v0001" and plan["store"] == str(store)
    assert plan["pool"]["shards"] == 3 and plan["pool"]["shards_counted_now"] == 3
    groups = {g["name"]: g for g in plan["groups"]}
    assert {n: g["requested_share"] for n, g in groups.items()} == {"web": 0.5, "books": 0.3, "code": 0.2}
    for g in groups.values():
        assert g["available_docs"] > 0 and g["available_tokens"] > g["tokens"] > 0 and 0 < g["epochs"] < 1

    # the text table, in-process
    rc, out, _ = run_cli(["mix", "--spec", spec, "--dry-run"], capsys)
    assert rc == 0 and "dry run; would be v0001" in out and "nothing written" in out
    assert "requested" in out and "effective" in out and "available tok" in out and "to draw" in out
    assert listing(store) == before

    # what the dry run said is what a build draws, row for row
    summary = B.build_mixture(load_spec(spec))
    assert summary["version"] == "v0001"
    for g in summary["groups"]:
        p = groups[g["name"]]
        assert (g["tokens"], g["docs"]) == (p["tokens"], p["docs"])
        assert (g["requested_share"], g["target_share"]) == (p["requested_share"], p["target_share"])
    assert summary["files"] == plan["files"] and summary["tokens"] == plan["tokens"]
    # now the counts are cached beside the pool, and a dry run uses them
    again = B.dry_run(load_spec(spec))
    assert again["pool"]["shards_counted_now"] == 0 and again["next_version"] == "v0002"


def test_a_misspelt_predicate_exits_2_naming_the_group_and_writes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    write_pool(str(store))
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.5},
        {"name": "books", "where": {"source": "bookz"}, "weight": 0.3},
        {"name": "good", "where": {"qualty_score": {"min": 0.5}}, "weight": 0.2},
    ]
    spec = spec_file(
        tmp_path, pool="store/runs/run-test/dedup", store="store", **{**SPEC, "name": "typo", "groups": groups}
    )
    before = listing(store)
    for dry in ([], ["--dry-run"]):
        rc, out, err = run_cli(["mix", "--spec", spec, *dry, "--json"], capsys)
        failure = json.loads(out)
        assert rc == 2 and failure["exit_code"] == 2 and failure["error_kind"] == "usage"
        books, good = failure["errors"]
        assert books == (
            f"{spec}: groups[1].where.source: value 'bookz' never occurs in the pool (source has 3 values: "
            "'books', 'code', 'web'; did you mean 'books'?); group 'books' matches nothing"
        )
        assert good.startswith(f"{spec}: groups[2].where.qualty_score: unknown column 'qualty_score'")
        assert good.endswith("; group 'good' (0.5 <= qualty_score) can match nothing")
    assert listing(store) == before


# ----------------------------------------------------------------------------- requested and effective shares


def test_requested_and_effective_shares_side_by_side_without_float_noise(pool, tmp_path, capsys):
    # 0.3 + 0.1 + 0.2 is 0.6000000000000001: normalised shares would carry float noise
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.3},
        {"name": "spanish", "where": {"lang": "es"}, "weight": 0.1, "allow_empty": True},
        {"name": "books", "where": {"source": "books"}, "weight": 0.2},
    ]
    summary = B.build_mixture(make_spec(pool, str(tmp_path / "store"), groups=groups))
    manifest = json.load(open(summary["manifest"]))
    got = {g["name"]: (g["requested_share"], g["target_share"]) for g in manifest["phases"][0]["groups"]}
    assert got == {"web": (0.5, 0.6), "spanish": (0.166666666667, 0.0), "books": (0.333333333333, 0.4)}
    assert tidy_floats({k: v for k, v in manifest.items() if k != "spec"}) == {
        k: v for k, v in manifest.items() if k != "spec"
    }  # every computed float at 12 significant digits
    assert "0000000" not in json.dumps({k: v for k, v in manifest.items() if k != "spec"})
    assert [g["weight"] for g in manifest["spec"]["groups"]] == [0.3, 0.1, 0.2]  # the spec as written

    # the card's table and weights.png: requested beside effective
    text = open(summary["card"]).read()
    assert "| group | sampling | requested | effective | realised |" in text
    assert "| spanish | uniform | 16.67% | 0.00% | 0.00% | 0 |" in text
    assert "| web | uniform | 50.00% | 60.00% |" in text
    labels, bars = card.weight_bars(manifest)
    assert labels == ["web", "spanish", "books"]
    assert bars["requested"] == pytest.approx([50.0, 16.6666666667, 33.3333333333])
    assert bars["effective"] == pytest.approx([60.0, 0.0, 40.0])
    png = open(os.path.join(summary["uri"], "weights.png"), "rb").read()
    assert png[:4] == b"\x89PNG"

    # the CLI table
    capsys.readouterr()
    print_mix(summary, as_json=False)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "requested" in line).split()
    assert header[2:5] == ["requested", "effective", "realised"]
    web = next(line for line in out.splitlines() if line.split()[1:2] == ["web"]).split()
    assert web[2:4] == ["50.00%", "60.00%"]


# ----------------------------------------------------------------------------- mixtures diff


def test_spec_changes_name_each_field_by_dotted_path():
    a = make_spec("/pool", "/store", phases=[{"name": "main", "budget_tokens": 100}], budget_tokens=None)
    groups = [dict(g) for g in a.model_dump(mode="json")["groups"]]
    b_groups = [
        {**groups[1], "weight": 0.4},  # books first now
        {**groups[0], "where": {"source": "news", "synthetic": False}},
        {"name": "extra", "where": {"lang": "fr"}, "weight": 0.1},
    ]  # code-good removed
    b = MixSpec.model_validate(
        {
            **a.model_dump(mode="json", exclude={"ray", "storage"}),
            "seed": 8,
            "groups": b_groups,
            "phases": [{"name": "main", "budget_tokens": 100}, {"name": "anneal", "budget_tokens": 10}],
        }
    )
    changes = spec_changes(a.fingerprint(), b.fingerprint())
    by_path = {c["path"]: c for c in changes}
    assert by_path["seed"] == {"path": "seed", "change": "changed", "a": 7, "b": 8}
    assert by_path["groups[web].where.source"] == {
        "path": "groups[web].where.source",
        "change": "changed",
        "a": "web",
        "b": "news",
    }
    assert by_path["groups[books].weight"]["a"] == 0.3 and by_path["groups[books].weight"]["b"] == 0.4
    assert by_path["groups[code-good]"]["change"] == "removed" and by_path["groups[code-good]"]["b"] is None
    assert by_path["groups[extra]"]["change"] == "added" and by_path["groups[extra]"]["b"]["weight"] == 0.1
    assert by_path["groups"] == {
        "path": "groups",
        "change": "reordered",
        "a": ["web", "books", "code-good"],
        "b": ["books", "web", "extra"],
    }
    assert by_path["phases[anneal]"]["change"] == "added"
    assert set(by_path) == {
        "seed",
        "groups[web].where.source",
        "groups[books].weight",
        "groups[code-good]",
        "groups[extra]",
        "groups",
        "phases[anneal]",
    }
    assert spec_changes(a.fingerprint(), a.fingerprint()) == []


def test_mixtures_diff_names_the_changed_fields(pool, tmp_path, capsys):
    store = str(tmp_path / "store")
    small = {"budget_tokens": 6_000, "output": {"shard_tokens": 10_000, "row_group_rows": 100}}
    groups = [
        {"name": "web", "where": {"source": "web"}, "weight": 0.5},
        {"name": "books", "where": {"source": ["books"]}, "weight": 0.5},
    ]
    B.build_mixture(make_spec(pool, store, **small, groups=groups))
    groups[1] = {**groups[1], "where": {"source": ["books", "code"]}}
    B.build_mixture(make_spec(pool, store, **small, groups=groups, seed=8, tolerance_pp=1.0))
    d = diff(store, "test-mix", "v0001", "v0002")
    assert d["spec_changed"] is True
    assert [(c["path"], c["a"], c["b"]) for c in d["spec_changes"]] == [  # manifests keep their keys sorted
        ("groups[books].where.source", ["books"], ["books", "code"]),
        ("seed", 7, 8),
        ("tolerance_pp", 0.5, 1.0),
    ]
    capsys.readouterr()
    print_diff(d, as_json=True)  # validated against the mixtures-diff contract
    assert json.loads(capsys.readouterr().out)["spec_changes"][1] == {
        "path": "seed",
        "change": "changed",
        "a": 7,
        "b": 8,
    }
    print_diff(d, as_json=False)
    out = capsys.readouterr().out
    assert "spec: 3 fields changed" in out
    assert '    groups[books].where.source: ["books"] -> ["books", "code"]' in out
    assert "    seed: 7 -> 8" in out


# ----------------------------------------------------------------------------- paths


def test_spec_paths_are_relative_to_the_spec_file(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "mixtures"
    (tmp_path / "project" / "tok").mkdir(parents=True)
    path = spec_file(
        folder,
        pool=["../runs/*/dedup/", "/abs/pool", "s3://bucket/pool"],
        store="..",
        tokenizer={"kind": "huggingface", "name": "../tok"},
        **SPEC,
    )
    monkeypatch.chdir(tmp_path)  # somewhere else
    spec = load_spec(os.path.relpath(path))
    project = str(tmp_path / "project")
    assert spec.pool == [f"{project}/runs/*/dedup", "/abs/pool", "s3://bucket/pool"]
    assert spec.store == project and spec.tokenizer.name == f"{project}/tok"
    # the shipped example: its `data` is beside it, not in whatever folder `mixforge` runs from
    example = load_spec(os.path.join(REPO, "configs", "mixture.example.yaml"))
    assert example.store == os.path.join(REPO, "configs", "data")


def test_a_spec_mapping_with_relative_paths_is_refused_before_any_work(pool, tmp_path):
    spec = make_spec("runs/run-test/dedup", "store")  # as typed into the Prefect UI
    with pytest.raises(PreflightError) as e:
        check_spec(spec)
    assert str(e.value).splitlines() == [
        f"{field}: relative path {value!r}: a spec given as a mapping (Prefect UI, deployment, API, Python) needs "
        "absolute paths or URIs (e.g. /data/store, s3://bucket/store); only a spec file resolves relative paths, "
        "against its own folder"
        for field, value in (("pool[0]", "runs/run-test/dedup"), ("store", "store"))
    ]
    with pytest.raises(PreflightError, match=r"^pool\[0\]: relative path"):
        B.build_mixture(spec)
    # a spec made in code from the process's own paths resolves them once, against its working directory
    made = B.spec_for_pool(os.path.relpath(pool), os.path.relpath(tmp_path / "store"))
    assert made.pool == [os.path.normpath(pool)] and made.store == str(tmp_path / "store")
    assert check_spec(made) == []


@pytest.mark.usefixtures("prefect_harness")
def test_the_mix_flow_refuses_relative_paths_from_the_ui(pool, tmp_path):
    from flows.mix import mix

    spec = make_spec(pool, "store").model_dump(mode="json")  # a mapping, as the UI sends it
    with pytest.raises(PreflightError, match=r"^store: relative path 'store': a spec given as a mapping"):
        mix(spec=spec)
    assert not os.path.exists("store")
