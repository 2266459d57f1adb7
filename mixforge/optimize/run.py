"""The mixture optimisation composite: swarm -> proxies -> fit -> propose (-> rounds) (-> verify).

    {store}/optimize/{name}/{run_id}/search.json         the search spec, resolved (create-only: the run's claim)
    {store}/optimize/{name}/{run_id}/targets/<t>.npy     each target's tokens (mixture tokenizer, EOS after each doc)
    {store}/optimize/{name}/{run_id}/vocab.npy           tokenizer id -> proxy id, one map for every proxy
    {store}/optimize/{name}/{run_id}/proxies/<id>/       weights.json, store/ (its sample: mixture + npy export),
                                                         result.json (the marker: losses, tokens, seconds, ...)
    {store}/optimize/{name}/{run_id}/proxies.parquet     one row per proxy
    {store}/optimize/{name}/{run_id}/fit/                each target's regressor (LightGBM text / log-linear JSON),
                                                         card.json (regressors tried, CV Spearman and MAE)
    {store}/optimize/{name}/{run_id}/proposal.yaml       the mixture spec with the proposed weights (`mix --spec`)
    {store}/optimize/{name}/{run_id}/manifest.json       written create-only, last: the run is complete

The run id defaults to a hash of the resolved search spec, the pool's fingerprints and the code
version, so rerunning the same spec resumes the same run: proxies with a `result.json` are not
trained again, and a complete run returns its manifest. Each proxy is one step on the executor
(`steps.proxy_step`), declaring one GPU when the driver sees one. The vocabulary map is built from
the prior's sample (the `verify-prior` proxy's, built first) and the targets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from mixforge import __version__, storage
from mixforge.config import load_model
from mixforge.config_errors import ConfigError
from mixforge.executor import Executor, Resources, SerialExecutor
from mixforge.mixtures.spec import MixSpec
from mixforge.names import validate_name
from mixforge.optimize import steps as S
from mixforge.optimize.fit import TargetFit, fit_targets
from mixforge.optimize.propose import propose, weighted_objective
from mixforge.optimize.search import SearchSpec
from mixforge.optimize.swarm import Space, project, sample_space
from mixforge.runs import sha256_json

log = logging.getLogger("mixforge")

__all__ = ["OptimizeLayout", "run_optimization", "materialize", "optimize_summary", "default_run_id"]

FORMAT = "mixforge.optimize/1"
Progress = Callable[[str, int, int], None]  # (step, units done, units in all), as the export's


@dataclass(frozen=True)
class OptimizeLayout:
    store: str
    name: str
    run_id: str

    def __post_init__(self) -> None:
        validate_name(self.name, "optimisation name")
        validate_name(self.run_id, "run id")

    @property
    def dir(self) -> str:
        return storage.join(self.store, "optimize", self.name, self.run_id)

    def path(self, *parts: str) -> str:
        return storage.join(self.dir, *parts)

    def target(self, name: str) -> str:
        return self.path("targets", f"{name}.npy")

    def proxy(self, proxy_id: str) -> str:
        return self.path("proxies", proxy_id)


def default_run_id(search: SearchSpec, pool_fingerprint: list | None = None) -> str:
    """`opt-` + a hash of the resolved search spec, the pool's shards and the code version."""
    spec = search.model_dump(mode="json")
    return "opt-" + sha256_json({"search": spec, "pool": pool_fingerprint, "code": __version__})[:16]


# ----------------------------------------------------------------------------- the pool's groups


def _spec_with(base: MixSpec, **changes: Any) -> MixSpec:
    return MixSpec.model_validate({**base.model_dump(mode="json"), **changes})


def _groups_with(base: MixSpec, weights: Mapping[str, float], max_epochs: Mapping[str, float]) -> list[dict]:
    groups = []
    for g in base.model_dump(mode="json")["groups"]:
        g["weight"] = float(weights.get(g["name"], 0.0))
        g["max_epochs"] = float(max_epochs.get(g["name"], g["max_epochs"]))
        groups.append(g)
    return groups


def available_tokens(mixture: MixSpec, shards, executor: Executor) -> dict[str, int]:
    """Every group's tokens in the pool (counted as `mix` counts them; the counts are cached)."""
    from mixforge.mixtures.build import count_tokens
    from mixforge.mixtures.plan import plan_mixture

    probe = _spec_with(
        mixture,
        groups=_groups_with(mixture, {g.name: 1.0 for g in mixture.groups}, {}),
        budget_tokens=1,
        budget_fraction=None,
        temperature=None,
        on_short="redistribute",
    )
    plan = plan_mixture(probe, shards, count_tokens(probe, shards, executor), executor)
    return {g.name: g.available_tokens for g in plan.phases[0].groups}


# ----------------------------------------------------------------------------- proxies


def _objective(losses: Mapping[str, float], target_weights: Mapping[str, float]) -> float:
    total = sum(target_weights.values())
    return float(sum(w / total * losses[t] for t, w in target_weights.items()))


def _run_proxies(
    jobs: list[S.ProxyJob], executor: Executor, resources: Resources, opts, progress: Progress | None
) -> list[dict]:
    todo = [j for j in jobs if not storage.exists(j.result_uri, opts)]
    if todo:

        def count(acc: int | None, _result: dict) -> int:
            acc = (acc or 0) + 1
            if progress is not None:
                progress("optimize-proxy", acc, len(todo))
            return acc

        log.info("training %d proxies (%d already finished)", len(todo), len(jobs) - len(todo))
        executor.map(
            S.proxy_step,
            [(j, opts) for j in todo],
            step="optimize-proxy",
            resources=resources,
            fold=count,
            storage_options=opts,
        )
    return [storage.read_json(j.result_uri, opts) for j in jobs]


def _fit(records: list[dict], groups: tuple[str, ...], search: SearchSpec) -> dict[str, TargetFit]:
    X = np.array([[r["weights"][g] for g in groups] for r in records])
    return fit_targets(X, {t.name: [r["losses"][t.name] for r in records] for t in search.targets}, search.fit)


def _write_fit(layout: OptimizeLayout, fits: dict[str, TargetFit], search: SearchSpec, n: int, opts) -> dict:
    targets = []
    for name, fit in fits.items():
        state = fit.model.state()
        if state["kind"] == "lightgbm":
            uri = layout.path("fit", f"{name}.lightgbm.txt")
            storage.write_bytes(uri, state["model"].encode(), opts)
        else:
            uri = layout.path("fit", f"{name}.{state['kind']}.json")
            storage.write_json(uri, state, opts)
        chosen = fit.scores[fit.chosen]
        targets.append(
            {
                "target": name,
                "chosen": fit.chosen,
                "model": uri,
                "spearman": None if chosen.spearman != chosen.spearman else round(chosen.spearman, 6),
                "mae": round(chosen.mae, 6),
                "cv": [s.report() for s in fit.scores.values()],
            }
        )
    card = {
        "swarm": n,
        "regressors": list(search.fit.regressors),
        "folds": min(search.fit.folds, n),
        "targets": targets,
        "uri": layout.path("fit", "card.json"),
    }
    storage.write_json(card["uri"], card, opts)
    return card


def _proposal_spec(search: SearchSpec, weights: Mapping[str, float], available: Mapping[str, int]) -> MixSpec:
    """The search's mixture spec with the proposed shares: searched groups share what the spec's own
    weights leave to them, at the search's budget and epoch cap; other groups keep their shares."""
    from mixforge.mixtures.plan import phase_shares

    mixture = search.mixture_spec()
    requested = phase_shares(mixture, mixture.effective_phases()[0], dict(available))
    searched = search.group_names()
    mass = 1.0 - sum(s for g, s in requested.items() if g not in searched)
    shares = {g: round(requested.get(g, 0.0), 9) for g in (x.name for x in mixture.groups) if g not in searched}
    shares |= {g: round(mass * weights[g], 9) for g in searched}
    return _spec_with(
        mixture,
        groups=_groups_with(mixture, shares, {g: search.epoch_cap for g in searched}),
        budget_tokens=search.budget(),
        budget_fraction=None,
        temperature=None,
    )


def _write_proposal(layout: OptimizeLayout, spec: MixSpec, opts) -> str:
    uri = layout.path("proposal.yaml")
    header = (
        f"# Proposed by mixforge optimize: {layout.name} run {layout.run_id} ({layout.dir}).\n"
        "# Build it with `mixforge mix --spec proposal.yaml`, or materialize the run.\n"
    )
    body = yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    storage.write_bytes(uri, (header + body).encode(), opts)
    return uri


def _write_table(layout: OptimizeLayout, records: list[dict], groups, search: SearchSpec, opts) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list] = {"id": [], "round": [], "role": []}
    columns |= {f"weight_{g}": [] for g in groups} | {f"loss_{t.name}": [] for t in search.targets}
    columns |= {"objective": [], "tokens": [], "seconds": [], "params": [], "device": []}
    for r in records:
        for key in ("id", "round", "role", "tokens", "seconds", "params", "device"):
            columns[key].append(r[key])
        for g in groups:
            columns[f"weight_{g}"].append(r["weights"][g])
        for t in search.targets:
            columns[f"loss_{t.name}"].append(r["losses"][t.name])
        columns["objective"].append(_objective(r["losses"], search.target_weights()))
    uri = layout.path("proxies.parquet")
    with storage.atomic_open(uri, opts) as f:
        pq.write_table(pa.table(columns), f)
    return uri


# ----------------------------------------------------------------------------- the composite


def run_optimization(
    search: SearchSpec,
    executor: Executor | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the optimisation `search` describes; returns its manifest (OptimizationManifest).
    `search` must be resolved (`load_search_spec` / `resolve_mixture`). A complete run is returned as is."""
    from mixforge import contracts
    from mixforge.mixtures.exclusions import with_standing_takedowns
    from mixforge.mixtures.pool import resolve_pool

    started, t0 = storage.utc_timestamp(), time.perf_counter()
    executor = executor or SerialExecutor()
    base = search.mixture_spec()
    if base.phases:
        raise ConfigError(f"mixture {base.name!r}: a search over a mixture with phases is not supported yet")
    opts = dict(base.storage_options if storage_options is None else storage_options)
    mixture = with_standing_takedowns(base)  # proxies never train on taken-down documents
    shards = resolve_pool(mixture.pool, opts)
    layout = OptimizeLayout(
        base.store, search.name, run_id or default_run_id(search, [[s.uri, s.sha256] for s in shards])
    )
    manifest_uri = layout.path("manifest.json")
    claim = json.dumps(search.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"
    if not storage.create_only(layout.path("search.json"), claim, opts):
        if storage.read_bytes(layout.path("search.json"), opts) != claim:
            raise ConfigError(f"run {layout.run_id!r} exists at {layout.dir} with another search spec")
        if storage.exists(manifest_uri, opts):
            log.info("optimisation run %s is complete: nothing to do", layout.dir)
            return storage.read_json(manifest_uri, opts)
        log.info("resuming optimisation run %s", layout.dir)

    available = available_tokens(mixture, shards, executor)
    space = search.space(available)
    groups = space.groups
    P, B = S.proxy_tokens(search.proxy), search.budget()
    cap = search.epoch_cap * max(1.0, P / B)  # the space caps shares at the budget; a proxy reads P tokens
    target_uris = {t.name: layout.target(t.name) for t in search.targets}
    for t in search.targets:
        if not storage.exists(target_uris[t.name], opts):
            tokens = S.tokenize_target(t.uri, mixture.tokenizer, search.proxy.eval_tokens + 1, opts)
            S.save_array(target_uris[t.name], tokens, opts)
    gpus = 0.0
    try:
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:
        pass
    resources = Resources(cpus=1, gpus=gpus)
    vocab_uri = layout.path("vocab.npy") if search.proxy.vocab_size else None

    def job(proxy_id: str, round_: int, role: str, w: np.ndarray) -> S.ProxyJob:
        weights = space.as_dict(w)
        store = storage.join(layout.proxy(proxy_id), "store")
        spec = _spec_with(
            mixture,
            store=store,
            groups=_groups_with(mixture, weights, {g: cap for g in groups}),
            budget_tokens=P,
            budget_fraction=None,
            temperature=None,
            on_short="fail",  # a short group would change the proxy's weights: fail, never redistribute
            seed=search.seed,
        )
        return S.ProxyJob(
            proxy_id, round_, role, weights, layout.proxy(proxy_id), spec, cap, search.proxy, target_uris, vocab_uri
        )

    prior_w = project(space.prior, space.lower, space.upper)[0]
    prior_job = job("verify-prior", -1, "prior", prior_w)
    if vocab_uri is not None and not storage.exists(vocab_uri, opts):
        from mixforge.optimize.proxy import vocab_table

        executor.map(S.sample_step, [(prior_job, opts)], step="optimize-sample", storage_options=opts)
        sample, _ = S.sample_proxy(prior_job.mixture, cap, opts)  # built by the step: read back
        arrays = [np.asarray(sample)] + [S.load_array(u, opts) for u in target_uris.values()]
        S.save_array(vocab_uri, vocab_table(arrays, search.proxy.vocab_size), opts)

    records: list[dict] = []
    rounds: list[dict] = []
    fits, proposal = None, None
    for r, n in enumerate([search.swarm.size, *search.rounds]):
        if r == 0:
            W = sample_space(space, n, search.seed, search.swarm.concentration)
        else:
            around = Space(groups, np.array([proposal.weights[g] for g in groups]), space.lower, space.upper)
            W = sample_space(around, n, search.seed + r, search.swarm.round_concentration)
        jobs = [job(f"{r}-{k:03d}", r, "swarm", w) for k, w in enumerate(W)]
        records += _run_proxies(jobs, executor, resources, opts, progress)
        fits = _fit(records, groups, search)
        proposal = propose(
            weighted_objective(fits, search.target_weights()), space, search.propose, search.swarm.concentration
        )
        rounds.append({"round": r, "proxies": n, "proposal": proposal.weights, "predicted": proposal.predicted})
        log.info("round %d: %d proxies, proposal %s (predicted %.4f)", r, n, proposal.weights, proposal.predicted)

    tw = search.target_weights()
    objective = weighted_objective(fits, tw)
    best = min(records, key=lambda rec: _objective(rec["losses"], tw))
    verify = None
    verified: list[dict] = []
    if search.verify:
        uniform = project(np.full(len(groups), 1 / len(groups)), space.lower, space.upper)[0]
        vjobs = [
            job("verify-proposal", -1, "proposal", np.array([proposal.weights[g] for g in groups])),
            prior_job,
            job("verify-uniform", -1, "uniform", uniform),
        ]
        verified = _run_proxies(vjobs, executor, resources, opts, progress)
        verify = {}
        for rec in verified:
            w = np.array([rec["weights"][g] for g in groups])
            verify[rec["role"]] = _verified(rec, tw, float(objective(w[None, :])[0]))
        verify["best_swarm"] = _verified(
            best, tw, float(objective(np.array([[best["weights"][g] for g in groups]]))[0])
        )

    all_records = records + verified
    table_uri = _write_table(layout, all_records, groups, search, opts)
    card = _write_fit(layout, fits, search, len(records), opts)
    proposal_uri = _write_proposal(layout, _proposal_spec(search, proposal.weights, available), opts)
    manifest = {
        "format": FORMAT,
        "name": search.name,
        "run_id": layout.run_id,
        "uri": layout.dir,
        "manifest": manifest_uri,
        "search": layout.path("search.json"),
        "mixture": {"name": base.name, "store": base.store, "spec_hash": base.spec_hash()},
        "groups": list(groups),
        "space": {
            g: {
                "prior": float(space.prior[i]),
                "min": float(space.lower[i]),
                "max": float(space.upper[i]),
                "available_tokens": int(available[g]),
            }
            for i, g in enumerate(groups)
        },
        "budget_tokens": B,
        "epoch_cap": search.epoch_cap,
        "proxy": {
            "config": search.proxy.model_dump(mode="json"),
            "tokens": P,
            "params": all_records[0]["params"],
            "device": all_records[0]["device"],
            "max_epochs": cap,
        },
        "targets": [
            {"name": t.name, "uri": t.uri, "weight": t.weight, "tokens": target_uris[t.name]} for t in search.targets
        ],
        "vocab": vocab_uri,
        "proxies": {
            "table": table_uri,
            "count": len(all_records),
            "swarm": len(records),
            "seconds": round(sum(rec["seconds"] for rec in all_records), 3),
        },
        "rounds": rounds,
        "fit": {"card": card["uri"], "swarm": card["swarm"], "targets": card["targets"]},
        "proposal": {**proposal.report(), "spec": proposal_uri},
        "best_swarm": {"id": best["id"], "weights": best["weights"], "objective": _objective(best["losses"], tw)},
        "verify": verify,
        "code_version": __version__,
        "timestamps": {"started": started, "committed": storage.utc_timestamp()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    contracts.validate(manifest, contracts.OptimizationManifest)
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    if not storage.create_only(manifest_uri, body, opts):
        manifest = storage.read_json(manifest_uri, opts)  # a concurrent identical run finished first
    return manifest


def _verified(rec: dict, target_weights: Mapping[str, float], predicted: float) -> dict[str, Any]:
    return {
        "id": rec["id"],
        "weights": rec["weights"],
        "losses": rec["losses"],
        "objective": _objective(rec["losses"], target_weights),
        "predicted": predicted,
    }


# ----------------------------------------------------------------------------- after the run


def optimize_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The `--json` summary of an optimisation run (OptimizeSummary), from its manifest."""
    verify = manifest.get("verify")
    return {
        "name": manifest["name"],
        "run_id": manifest["run_id"],
        "uri": manifest["uri"],
        "manifest": manifest["manifest"],
        "proposal": manifest["proposal"]["weights"],
        "predicted": manifest["proposal"]["predicted"],
        "spec": manifest["proposal"]["spec"],
        "proxies": manifest["proxies"]["count"],
        "fit": [
            {"target": t["target"], "chosen": t["chosen"], "spearman": t["spearman"], "mae": t["mae"]}
            for t in manifest["fit"]["targets"]
        ],
        "verify": None if verify is None else {role: v["objective"] for role, v in verify.items()},
        "seconds": manifest["seconds"],
    }


def provenance(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a materialised version's manifest says about the run that chose its weights."""
    targets = manifest["fit"]["targets"]
    return {
        "optimization": {
            "manifest": manifest["manifest"],
            "name": manifest["name"],
            "run_id": manifest["run_id"],
            "swarm": manifest["fit"]["swarm"],
            "regressors": {t["target"]: t["chosen"] for t in targets},
            "cv_spearman": {t["target"]: t["spearman"] for t in targets},
            "predicted": manifest["proposal"]["predicted"],
        }
    }


def materialize(
    manifest: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None, executor: Executor | None = None
) -> dict[str, Any]:
    """Build the run's proposal (proposal.yaml) as a new version of its mixture, whose manifest links the
    run (`provenance.optimization`); returns the `mix` summary of that version."""
    from mixforge.mixtures.build import build_mixture

    uri = manifest["proposal"]["spec"]
    spec = load_model(MixSpec, yaml.safe_load(storage.read_bytes(uri, storage_options)), uri)
    return build_mixture(spec, executor, provenance=provenance(manifest))
