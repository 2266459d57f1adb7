"""The optimisation composite end to end on CPU: a pool of three groups of clearly different text,
tiny proxies trained in real worker processes, each on its mixture's npy export; resume after a
failure; the proposal as a mixture spec and its materialised version linking the run."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mixforge import contracts, storage
from mixforge.executor import LocalPoolExecutor, SerialExecutor, StepFailed
from mixforge.mixtures import versions as V
from mixforge.mixtures.spec import load_spec
from mixforge.optimize import steps as S
from mixforge.optimize.run import materialize, optimize_summary, run_optimization
from mixforge.optimize.search import load_search_spec
from tests.helpers import prose

PROXY = {
    "hidden_size": 16,
    "layers": 1,
    "heads": 2,
    "seq_len": 32,
    "batch_size": 4,
    "train_tokens": 6144,
    "vocab_size": 256,
    "lr": 1e-2,
    "eval_tokens": 512,
}


def code(i: int) -> str:
    return "\n".join(f"def f{i}_{k}(x):\n    return x * {k + i % 7} + {(i * k) % 13}" for k in range(4))


def numbers(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(str(int(v)) for v in rng.integers(0, 1000, 24))


GROUPS = {"prose": lambda i: prose(i, 3), "code": code, "numbers": numbers}


def write_pool(root: str, docs: dict[str, int]) -> str:
    pool = os.path.join(root, "pool")
    os.makedirs(pool)
    for s, (source, n) in enumerate(docs.items()):
        rows = [
            {"id": f"{source}-{i}", "text": GROUPS[source](i), "source": source, "url": None, "meta": None}
            for i in range(n)
        ]
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(pool, f"part-{s:05d}.parquet"))
    return pool


def write_target(root: str, name: str, mix: dict[str, int]) -> str:
    """Held-out documents (ids past the pool's) of some groups, in a known ratio."""
    rows = [{"text": GROUPS[g](10_000 + i)} for g, n in mix.items() for i in range(n)]
    uri = os.path.join(root, "targets", f"{name}.parquet")
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), uri)
    return uri


def write_search(root: str, **changes) -> str:
    mixture = {
        "name": "base",
        "pool": "pool/",
        "store": "store",
        "budget_tokens": 20_000,
        "output": {"row_group_rows": 64},
        "groups": [{"name": g, "where": {"source": g}, "weight": 1} for g in GROUPS],
    }
    with open(os.path.join(root, "mix.yaml"), "w") as f:
        yaml.safe_dump(mixture, f)
    search = {
        "name": "find-mix",
        "mixture": "mix.yaml",
        "swarm": {"size": 6},
        "targets": [{"name": "held-out", "uri": "targets/held-out.parquet"}],
        "proxy": PROXY,
        "fit": {"folds": 3},
        "propose": {"candidates": 4000, "top_k": 40},
        **changes,
    }
    path = os.path.join(root, "search.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(search, f)
    return path


@pytest.fixture
def root(tmp_path) -> str:
    write_pool(str(tmp_path), {"prose": 120, "code": 60, "numbers": 30})
    write_target(str(tmp_path), "held-out", {"prose": 12, "code": 4})
    return str(tmp_path)


def test_a_swarm_end_to_end_in_worker_processes_then_materialised(root):
    search = load_search_spec(write_search(root, rounds=[3], verify=True))
    progress: list[tuple] = []
    manifest = run_optimization(search, LocalPoolExecutor(2), progress=lambda *a: progress.append(a))
    # Per proxy as it finishes: the swarm (6), the round (3), the verification (3).
    finished = [("optimize-proxy", 6, 6), ("optimize-proxy", 3, 3), ("optimize-proxy", 3, 3)]
    assert [p for p in progress if p[1] == p[2]] == finished and len(progress) == 12
    contracts.validate(manifest, contracts.OptimizationManifest)
    run = manifest["uri"]
    assert run == storage.join(root, "store", "optimize", "find-mix", manifest["run_id"])
    assert manifest["run_id"].startswith("opt-") and manifest["groups"] == ["prose", "code", "numbers"]

    # The space: natural shares as prior; the 4-epoch cap at 20k tokens binds the small numbers group.
    space = manifest["space"]
    assert space["prose"]["available_tokens"] > space["code"]["available_tokens"] > 0
    assert space["numbers"]["max"] == pytest.approx(4 * space["numbers"]["available_tokens"] / 20_000)
    assert space["numbers"]["max"] < 1

    # 6 swarm proxies + a CLIMB round of 3 + 3 verification proxies, each with its marker and sample.
    table = pq.read_table(storage.join(run, "proxies.parquet")).to_pydict()
    assert len(table["id"]) == manifest["proxies"]["count"] == 12 and manifest["proxies"]["swarm"] == 9
    assert table["round"].count(0) == 6 and table["round"].count(1) == 3
    assert sorted(table["role"][-3:]) == ["prior", "proposal", "uniform"]
    assert all(np.isfinite(table["loss_held-out"])) and all(
        t == S.proxy_tokens(search.proxy) - 1 for t in table["tokens"]
    )
    for pid in table["id"]:
        result = storage.read_json(storage.join(run, "proxies", pid, "result.json"))
        weights = np.array([result["weights"][g] for g in manifest["groups"]])
        assert weights.sum() == pytest.approx(1) and weights[2] <= space["numbers"]["max"] + 1e-9
        # The sample is the mixture's npy export, within the epoch cap, in the proxy's private store.
        sample = result["sample"]
        assert sample["export"].startswith(storage.join(run, "proxies", pid, "store", "mixtures", "base", "v0001"))
        # Its budget is the proxy's tokens, realised to within a document per group (training wraps the rest).
        assert sample["tokens"] >= 0.9 * S.proxy_tokens(search.proxy)
        assert all(g["epochs"] <= manifest["proxy"]["max_epochs"] + 1e-6 for g in sample["groups"].values())
        for g, share in result["weights"].items():  # the mixture realised the proxy's weights
            realised = sample["groups"].get(g, {"share": 0.0})["share"]
            assert realised == pytest.approx(share, abs=0.03)
    # No version of the main mixture was made by the proxies.
    assert V.list_versions(V.MixtureLayout(storage.join(root, "store"), "base")) == []

    # Fit, card, targets, vocabulary.
    card = storage.read_json(storage.join(run, "fit", "card.json"))
    assert card["swarm"] == 9 and card["regressors"] == ["lightgbm", "loglinear", "logshare"]
    assert {c["regressor"] for c in card["targets"][0]["cv"]} == {"lightgbm", "loglinear", "logshare"}
    assert os.path.exists(card["targets"][0]["model"])
    target = S.load_array(storage.join(run, "targets", "held-out.npy"))
    assert len(target) == PROXY["eval_tokens"] + 1 and target.dtype == np.uint32
    assert len(S.load_array(storage.join(run, "vocab.npy"))) > PROXY["vocab_size"]
    assert [r["proxies"] for r in manifest["rounds"]] == [6, 3]

    # The proposal: within the space, a mixture spec `mix --spec` loads.
    weights = manifest["proposal"]["weights"]
    assert sum(weights.values()) == pytest.approx(1) and weights["numbers"] <= space["numbers"]["max"] + 1e-9
    proposal = load_spec(manifest["proposal"]["spec"])
    shares = {g.name: g.weight for g in proposal.groups}
    assert shares == pytest.approx(weights, abs=1e-8) and proposal.budget_tokens == 20_000
    assert proposal.store == storage.join(root, "store") and all(g.max_epochs == 4.0 for g in proposal.groups)
    verify = manifest["verify"]
    assert set(verify) == {"proposal", "prior", "uniform", "best_swarm"}
    assert verify["proposal"]["weights"] == pytest.approx(weights)
    # Seeded and single-threaded, so this is a fixed outcome: the verified proposal beats the prior and uniform.
    assert verify["proposal"]["objective"] < min(verify["prior"]["objective"], verify["uniform"]["objective"])
    summary = optimize_summary(manifest)
    contracts.validate(summary, contracts.OptimizeSummary)

    # A rerun of the same spec is the same, complete run: nothing is done again.
    stamp = os.stat(storage.join(run, "manifest.json")).st_mtime_ns
    assert run_optimization(load_search_spec(os.path.join(root, "search.yaml")), SerialExecutor()) == manifest
    assert os.stat(storage.join(run, "manifest.json")).st_mtime_ns == stamp

    built = materialize(manifest)
    assert built["version"] == "v0001" and built["name"] == "base"
    mixture = V.read_manifest(storage.join(root, "store"), "base", "v0001")
    link = mixture["provenance"]["optimization"]
    assert link["manifest"] == storage.join(run, "manifest.json") and link["run_id"] == manifest["run_id"]
    assert link["swarm"] == 9 and set(link["regressors"]) == {"held-out"}
    realised = {g["name"]: g["realised_share"] for g in mixture["phases"][0]["groups"]}
    assert realised == pytest.approx(weights, abs=0.02)
    readme = open(built["card"]).read()
    assert f"weights chosen by optimisation run `{manifest['run_id']}`" in readme and "9 proxies" in readme


class FailingAfter(SerialExecutor):
    """Lets `proxies` proxy steps finish, then every later one fails (as a kill would stop them)."""

    def __init__(self, proxies: int) -> None:
        super().__init__()
        self.left = proxies

    def run(self, fn, calls, **kwargs):
        def guarded(*args):
            if fn is S.proxy_step:
                if self.left == 0:
                    raise RuntimeError("killed")
                self.left -= 1
            return fn(*args)

        return super().run(guarded, calls, **kwargs)


def test_a_failed_swarm_resumes_keeping_its_finished_proxies(root):
    path = write_search(root, swarm={"size": 4})
    with pytest.raises(StepFailed, match="killed"):
        run_optimization(load_search_spec(path), FailingAfter(2))
    runs = storage.join(root, "store", "optimize", "find-mix")
    (run_id,) = os.listdir(runs)
    proxies = storage.join(runs, run_id, "proxies")
    finished = sorted(p for p in os.listdir(proxies) if os.path.exists(storage.join(proxies, p, "result.json")))
    assert finished == ["0-000", "0-001"] and not os.path.exists(storage.join(runs, run_id, "manifest.json"))
    stamps = {p: os.stat(storage.join(proxies, p, "result.json")).st_mtime_ns for p in finished}

    manifest = run_optimization(load_search_spec(path), SerialExecutor())
    assert manifest["run_id"] == run_id and manifest["proxies"]["count"] == 4
    for p in finished:  # not trained again
        assert os.stat(storage.join(proxies, p, "result.json")).st_mtime_ns == stamps[p]

    # Another spec under an existing run id is refused.
    with pytest.raises(Exception, match="another search spec"):
        run_optimization(load_search_spec(write_search(root, swarm={"size": 5})), SerialExecutor(), run_id=run_id)
