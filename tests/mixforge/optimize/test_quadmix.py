"""QuaDMix: the search also covers the quality-sampling temperature of quality-sampled groups. The spec
checks (refused groups, nothing to search), outputs unchanged without the section, the targets' pre-flight,
and a known answer end to end: a group whose score is 1 exactly on documents like the target (prose) and 0
on the other kind mixed into it (numbers) must get a low temperature, and the same fit on shuffled losses
must not reliably give one."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mixforge import cli, contracts, storage
from mixforge.config_errors import ConfigError
from mixforge.executor import LocalPoolExecutor, SerialExecutor
from mixforge.mixtures import versions as V
from mixforge.mixtures.spec import load_spec
from mixforge.optimize import report
from mixforge.optimize.fit import FitOptions, fit_targets
from mixforge.optimize.propose import ProposeOptions, propose, weighted_objective
from mixforge.optimize.run import default_run_id, materialize, optimize_summary, run_optimization
from mixforge.optimize.search import check_targets, load_search_spec
from mixforge.optimize.swarm import Space, TemperatureBox
from tests.helpers import prose
from tests.mixforge.optimize.test_run import PROXY, code, numbers  # the same tiny proxy and texts


def write_pool(root: str, n: int = 160) -> None:
    """`mixed`: prose (score 1) and numbers (score 0) in one group; `code`: code, no score."""
    rows = [{"id": f"p{i}", "text": prose(i, 3), "source": "mixed", "score": 1.0} for i in range(n)]
    rows += [{"id": f"n{i}", "text": numbers(i), "source": "mixed", "score": 0.0} for i in range(n)]
    rows += [{"id": f"c{i}", "text": code(i), "source": "code", "score": None} for i in range(n // 2)]
    os.makedirs(os.path.join(root, "pool"))
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "pool", "part-00000.parquet"))
    os.makedirs(os.path.join(root, "targets"))
    held_out = [{"text": prose(10_000 + i, 3)} for i in range(20)]  # held-out prose: the high-score kind
    pq.write_table(pa.Table.from_pylist(held_out), os.path.join(root, "targets", "prose.parquet"))


def write_search(root: str, sampling: dict | None = None, **changes) -> str:
    mixture = {
        "name": "base",
        "pool": "pool/",
        "store": "store",
        "budget_tokens": 20_000,
        "output": {"row_group_rows": 64},
        "groups": [
            {
                "name": "mixed",
                "where": {"source": "mixed"},
                "weight": 1,
                "sampling": sampling or {"method": "quality", "column": "score"},
            },
            {"name": "code", "where": {"source": "code"}, "weight": 1},
        ],
    }
    with open(os.path.join(root, "mix.yaml"), "w") as f:
        yaml.safe_dump(mixture, f)
    search = {
        "name": "quadmix",
        "mixture": "mix.yaml",
        # the mixed group's share varies little, so its temperature is what the losses mostly say
        "bounds": {"mixed": {"min": 0.4, "max": 0.6}},
        "swarm": {"size": 8},
        "targets": [{"name": "prose", "uri": "targets/prose.parquet"}],
        "proxy": PROXY,
        "fit": {"folds": 4},
        "propose": {"candidates": 4000, "top_k": 40},
        "quality_temperature": {"min": 0.25, "max": 4.0},
        **changes,
    }
    path = os.path.join(root, "search.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(search, f)
    return path


@pytest.fixture
def root(tmp_path) -> str:
    write_pool(str(tmp_path))
    return str(tmp_path)


def test_the_section_is_checked_against_the_mixture_and_absent_changes_nothing(root):
    spec = load_search_spec(write_search(root))
    assert spec.temperature_groups() == ["mixed"] and spec.dump()["quality_temperature"]["min"] == 0.25
    named = load_search_spec(write_search(root, quality_temperature={"groups": ["mixed"], "max": 2}))
    assert named.temperature_groups() == ["mixed"] and named.quality_temperature.max == 2

    # A named group that does not sample by quality is refused, naming it, before any work.
    with pytest.raises(ConfigError, match=r"quality_temperature.groups: group 'code' samples by 'uniform'"):
        load_search_spec(write_search(root, quality_temperature={"groups": ["code"]}))
    with pytest.raises(ConfigError, match=r"'other' is not among the searched groups"):
        load_search_spec(write_search(root, quality_temperature={"groups": ["other"]}))
    # The default (every quality-sampled group) with none of them: refused too.
    with pytest.raises(ConfigError, match=r"quality_temperature: no searched group of mixture 'base' samples by"):
        load_search_spec(write_search(root, sampling={"method": "uniform"}))
    with pytest.raises(ConfigError, match=r"min \(3.0\) is above max \(1.0\)"):
        load_search_spec(write_search(root, quality_temperature={"min": 3, "max": 1}))

    # Without the section the spec dumps (search.json, the run id) exactly as before the option existed.
    plain = load_search_spec(write_search(root, quality_temperature=None))
    assert plain.temperature_groups() == [] and "quality_temperature" not in plain.dump()
    assert plain.dump() == {k: v for k, v in plain.model_dump(mode="json").items() if k != "quality_temperature"}
    assert default_run_id(plain) != default_run_id(spec)

    # Temperatures are drawn log-uniformly within the bounds from their own stream (seeded).
    box = TemperatureBox.of(["mixed"], 0.25, 4.0)
    z = box.sample(200, seed=0)
    assert np.all((z >= math.log(0.25)) & (z <= math.log(4.0))) and abs(np.median(z)) < 0.3
    np.testing.assert_array_equal(z, box.sample(200, seed=0))
    near = box.around(np.array([math.log(0.25)]), 200, seed=1)  # on a bound: reflected, not piled on it
    assert np.all(near >= math.log(0.25)) and len(np.unique(near)) == 200 and np.median(near) < math.log(0.5)
    assert box.as_dict(np.array([0.0])) == {"mixed": 1.0}


def test_preflight_names_a_missing_target_before_prefect_or_ray(root, capsys):
    path = write_search(root, targets=[{"name": "gone", "uri": "targets/gone.parquet"}])
    with pytest.raises(ConfigError, match=r"targets\[0\] \(gone\): .*gone.parquet.*no such file"):
        check_targets(load_search_spec(path))
    assert cli.main(["optimize", "--spec", path, "--json"]) == 2
    failure = json.loads(capsys.readouterr().out)
    assert failure["error_kind"] == "usage" and "targets[0] (gone)" in " ".join(failure["errors"])
    assert not os.path.exists(os.path.join(root, "store"))  # nothing ran

    # A target without a `text` column, and a quality column the pool lacks: named too.
    pq.write_table(pa.table({"body": ["x"]}), os.path.join(root, "targets", "body.parquet"))
    path = write_search(root, targets=[{"name": "body", "uri": "targets/body.parquet"}])
    assert cli.main(["optimize", "--spec", path]) == 2
    assert "targets[0] (body)" in capsys.readouterr().err
    path = write_search(root, sampling={"method": "quality", "column": "nope"})
    assert cli.main(["optimize", "--spec", path]) == 2
    assert "groups[0].sampling.column" in capsys.readouterr().err and not os.path.exists(os.path.join(root, "store"))


def low_temperature(temperatures: dict[str, float]) -> bool:
    """Below the geometric middle of [0.25, 4] (1.0): favouring the high scores."""
    return temperatures["mixed"] < math.sqrt(0.25 * 4.0)


def test_known_answer_a_score_high_on_target_like_text_gets_a_low_temperature(root):
    search = load_search_spec(write_search(root, rounds=[2]))
    manifest = run_optimization(search, LocalPoolExecutor(2))
    contracts.validate(manifest, contracts.OptimizationManifest)
    run = manifest["uri"]
    assert manifest["quality_temperature"] == {"groups": ["mixed"], "min": 0.25, "max": 4.0, "own": {"mixed": 1.0}}

    # Each proxy drew its temperature, recorded in the table, and its sample was drawn with it.
    table = pq.read_table(storage.join(run, "proxies.parquet")).to_pydict()
    swarm_t = [t for t, role in zip(table["temperature_mixed"], table["role"]) if role == "swarm"]
    assert len(swarm_t) == 10 and all(0.25 <= t <= 4.0 for t in swarm_t) and len(set(swarm_t)) == 10
    # The CLIMB round resampled the temperature around round 0's proposal (sd 0.15 of the log range).
    first = manifest["rounds"][0]["temperatures"]["mixed"]
    assert all(abs(math.log(t / first)) < 4 * 0.15 * math.log(16) for t in table["temperature_mixed"][8:10])
    for pid, t in zip(table["id"], table["temperature_mixed"]):
        result = storage.read_json(storage.join(run, "proxies", pid, "result.json"))
        assert result["temperatures"] == {"mixed": t}
        version = storage.read_json(result["sample"]["mixture"])
        (mixed,) = [g for g in version["spec"]["groups"] if g["name"] == "mixed"]
        assert mixed["sampling"]["temperature"] == pytest.approx(t)
    # The prior's sample (the vocabulary's) keeps the spec's own temperature.
    prior = V.read_manifest(storage.join(run, "proxies", "verify-prior", "store"), "base", None)
    (mixed,) = [g for g in prior["spec"]["groups"] if g["name"] == "mixed"]
    assert mixed["sampling"]["temperature"] == 1.0

    # The known answer: a low temperature, from the fit and in every output that carries the proposal.
    proposal = manifest["proposal"]
    assert low_temperature(proposal["temperatures"]), proposal
    assert set(proposal["alternatives"]["slsqp"]["temperatures"]) == {"mixed"}
    assert manifest["best_swarm"]["temperatures"]["mixed"] in swarm_t
    spec = load_spec(proposal["spec"])
    assert spec.group("mixed").sampling.temperature == pytest.approx(proposal["temperatures"]["mixed"])
    assert spec.group("code").sampling.method == "uniform"
    summary = optimize_summary(manifest)
    contracts.validate(summary, contracts.OptimizeSummary)
    assert summary["temperatures"] == proposal["temperatures"]

    # The fit says why: at the proposed weights the predicted loss falls as the temperature falls.
    from mixforge.optimize.run import _fit

    records = [storage.read_json(storage.join(run, "proxies", pid, "result.json")) for pid in table["id"]]
    groups = tuple(manifest["groups"])
    box = TemperatureBox.of(["mixed"], 0.25, 4.0)
    fits = _fit(records, groups, search, box)
    objective = weighted_objective(fits, {"prose": 1.0})
    w = [proposal["weights"][g] for g in groups]
    assert objective(np.array([[*w, math.log(0.25)]]))[0] < objective(np.array([[*w, math.log(4.0)]]))[0]

    # With the losses shuffled over the same proxies, a low temperature is not reliably proposed: the
    # check above cannot pass by construction.
    X = np.array([[*[r["weights"][g] for g in groups], math.log(r["temperatures"]["mixed"])] for r in records])
    y = np.array([r["losses"]["prose"] for r in records])
    space = Space(
        groups,
        np.array([manifest["space"][g]["prior"] for g in groups]),
        np.array([manifest["space"][g]["min"] for g in groups]),
        np.array([manifest["space"][g]["max"] for g in groups]),
    )
    lows = []
    for seed in range(8):
        shuffled = fit_targets(X, {"prose": np.random.default_rng(seed).permutation(y)}, search.fit, n_weights=2)
        found = propose(weighted_objective(shuffled, {"prose": 1.0}), space, search.propose, temperatures=box)
        lows.append(low_temperature(found.temperatures))
    assert not all(lows), lows

    # The report shows the searched temperature beside the spec's own; its plots have a panel for it.
    text, _ = report.write_report(manifest)
    assert f"| mixed | 1 | {proposal['temperatures']['mixed']:.3g} |" in text
    assert {"temperature_mixed", "weight_mixed"} <= set(report.proxy_rows(manifest)[0])

    # A rerun is the same complete run; the materialised version carries the temperatures and says so.
    assert run_optimization(load_search_spec(os.path.join(root, "search.yaml")), SerialExecutor()) == manifest
    built = materialize(manifest)
    version = V.read_manifest(storage.join(root, "store"), "base", built["version"])
    assert version["provenance"]["optimization"]["temperatures"] == pytest.approx(proposal["temperatures"])
    (mixed,) = [g for g in version["spec"]["groups"] if g["name"] == "mixed"]
    assert mixed["sampling"]["temperature"] == pytest.approx(proposal["temperatures"]["mixed"])
    card = Path(built["card"]).read_text()
    assert (
        f"temperatures chosen by the same search (QuaDMix): mixed: T={proposal['temperatures']['mixed']:.3g}" in card
    )
    # proposal.yaml loads back as the proposal (a quality sampler keeps its `method` in the dump)
    reloaded = load_spec(os.path.join(run, "proposal.yaml"))
    assert reloaded.group("mixed").sampling.method == "quality"


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fit_and_proposal_follow_a_known_temperature_effect(sign):
    # loss falls with w_mixed (logshare's shape) and moves with log T by `sign`: the proposal's T is the low
    # bound when the loss rises with T, the high one when it falls; the weights are unaffected.
    rng = np.random.default_rng(0)
    space = Space(("mixed", "b"), np.array([0.5, 0.5]), np.array([0.1, 0.1]), np.array([0.9, 0.9]))
    box = TemperatureBox.of(["mixed"], 0.25, 4.0)
    W = rng.dirichlet([2, 2], size=40)
    Z = box.sample(40, seed=1)
    y = 3 - 0.7 * np.log(W[:, 0] + 0.01) - 0.3 * np.log(W[:, 1] + 0.01) + sign * 0.2 * Z[:, 0]
    y += rng.normal(0, 0.005, len(y))
    fits = fit_targets(np.hstack([W, Z]), {"t": y}, FitOptions(regressors=["logshare"], folds=4), n_weights=2)
    assert fits["t"].model.state()["b"] == pytest.approx([sign * 0.2], abs=0.03)
    objective = weighted_objective(fits, {"t": 1.0})
    for method in ("sample-average", "slsqp"):
        found = propose(objective, space, ProposeOptions(candidates=4000, top_k=20, method=method), temperatures=box)
        assert low_temperature(found.temperatures) == (sign > 0), (method, found.report())
        assert found.weights["mixed"] == pytest.approx(0.7, abs=0.12)
    # LightGBM and loglinear take the extra column too.
    both = fit_targets(np.hstack([W, Z]), {"t": y}, FitOptions(regressors=["lightgbm", "loglinear"], folds=4), 2)
    assert both["t"].predict(np.hstack([W, Z])).shape == (40,)
