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

QuaDMix (`quality_temperature:` in the search spec): each proxy also draws a temperature per searched
quality-sampled group (log-uniform, seeded), its sample is drawn with them, the proxies table records
them (`temperature_<group>`), the fit sees their logs after the weights, the proposal and its
mixture spec carry the chosen ones; the prior and uniform proxies keep the spec's own temperatures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mixforge import __version__, storage
from mixforge.config_errors import ConfigError
from mixforge.executor import Executor, Resources, SerialExecutor
from mixforge.mixtures.spec import MixSpec
from mixforge.optimize import results as R
from mixforge.optimize import steps as S
from mixforge.optimize.fit import TargetFit, fit_targets
from mixforge.optimize.propose import propose, weighted_objective
from mixforge.optimize.results import OptimizeLayout, materialize, optimize_summary
from mixforge.optimize.search import SearchSpec, check_targets
from mixforge.optimize.swarm import Space, TemperatureBox, project, sample_space
from mixforge.runs import sha256_json

log = logging.getLogger("mixforge")

__all__ = ["OptimizeLayout", "run_optimization", "materialize", "optimize_summary", "default_run_id"]

FORMAT = "mixforge.optimize/1"
Progress = Callable[[str, int, int], None]  # (step, units done, units in all), as the export's


def default_run_id(search: SearchSpec, pool_fingerprint: list | None = None) -> str:
    """`opt-` + a hash of the resolved search spec, the pool's shards and the code version."""
    spec = search.dump()
    return "opt-" + sha256_json({"search": spec, "pool": pool_fingerprint, "code": __version__})[:16]


# ----------------------------------------------------------------------------- the pool's groups


def available_tokens(mixture: MixSpec, shards, executor: Executor) -> dict[str, int]:
    """Every group's tokens in the pool (counted as `mix` counts them; the counts are cached)."""
    from mixforge.mixtures.build import count_tokens
    from mixforge.mixtures.plan import plan_mixture

    probe = R.spec_with(
        mixture,
        groups=R.groups_with(mixture, {g.name: 1.0 for g in mixture.groups}, {}),
        budget_tokens=1,
        budget_fraction=None,
        temperature=None,
        on_short="redistribute",
    )
    plan = plan_mixture(probe, shards, count_tokens(probe, shards, executor), executor)
    return {g.name: g.available_tokens for g in plan.phases[0].groups}


# ----------------------------------------------------------------------------- proxies


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


def features(record: Mapping[str, Any], groups: tuple[str, ...], box: TemperatureBox | None) -> np.ndarray:
    """A proxy's point for the regressors: its weights, then the log of each searched temperature."""
    w = np.array([record["weights"][g] for g in groups])
    return w if box is None else np.concatenate([w, box.of_dict(record["temperatures"])])


def _fit(
    records: list[dict], groups: tuple[str, ...], search: SearchSpec, box: TemperatureBox | None
) -> dict[str, TargetFit]:
    X = np.array([features(r, groups, box) for r in records])
    losses = {t.name: [r["losses"][t.name] for r in records] for t in search.targets}
    return fit_targets(X, losses, search.fit, n_weights=len(groups))


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
    check_targets(search, opts)  # the CLI's pre-flight did it too; a flow started elsewhere gets it here
    mixture = with_standing_takedowns(base)  # proxies never train on taken-down documents
    shards = resolve_pool(mixture.pool, opts)
    layout = OptimizeLayout(
        base.store, search.name, run_id or default_run_id(search, [[s.uri, s.sha256] for s in shards])
    )
    manifest_uri = layout.path("manifest.json")
    claim = json.dumps(search.dump(), indent=2, sort_keys=True).encode() + b"\n"
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
    qt, own = search.quality_temperature, R.own_temperatures(search)
    box = None if own is None else TemperatureBox.of(own, qt.min, qt.max)

    def job(proxy_id: str, round_: int, role: str, w: np.ndarray, temps: dict[str, float] | None = own) -> S.ProxyJob:
        weights = space.as_dict(w)
        store = storage.join(layout.proxy(proxy_id), "store")
        spec = R.spec_with(
            mixture,
            store=store,
            groups=R.groups_with(mixture, weights, {g: cap for g in groups}, temps),
            budget_tokens=P,
            budget_fraction=None,
            temperature=None,
            on_short="fail",  # a short group would change the proxy's weights: fail, never redistribute
            seed=search.seed,
        )
        return S.ProxyJob(
            proxy_id,
            round_,
            role,
            weights,
            layout.proxy(proxy_id),
            spec,
            cap,
            search.proxy,
            target_uris,
            vocab_uri,
            temperatures=temps,
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
            Z = None if box is None else box.sample(n, search.seed)
        else:
            around = Space(groups, np.array([proposal.weights[g] for g in groups]), space.lower, space.upper)
            W = sample_space(around, n, search.seed + r, search.swarm.round_concentration)
            Z = None if box is None else box.around(box.of_dict(proposal.temperatures), n, search.seed + r)
        temps = [own if box is None else box.as_dict(z) for z in (Z if Z is not None else [None] * n)]
        jobs = [job(f"{r}-{k:03d}", r, "swarm", w, t) for k, (w, t) in enumerate(zip(W, temps))]
        records += _run_proxies(jobs, executor, resources, opts, progress)
        fits = _fit(records, groups, search, box)
        proposal = propose(
            weighted_objective(fits, search.target_weights()), space, search.propose, search.swarm.concentration, box
        )
        rounds.append({"round": r, "proxies": n, "proposal": proposal.weights, "predicted": proposal.predicted})
        if proposal.temperatures is not None:
            rounds[-1]["temperatures"] = proposal.temperatures
        log.info(
            "round %d: %d proxies, proposal %s%s (predicted %.4f)",
            r,
            n,
            proposal.weights,
            "" if proposal.temperatures is None else f", temperatures {proposal.temperatures}",
            proposal.predicted,
        )

    tw = search.target_weights()
    objective = weighted_objective(fits, tw)
    best = min(records, key=lambda rec: R.objective_of(rec["losses"], tw))
    verify = None
    verified: list[dict] = []
    if search.verify:
        uniform = project(np.full(len(groups), 1 / len(groups)), space.lower, space.upper)[0]
        vjobs = [
            job(
                "verify-proposal",
                -1,
                "proposal",
                np.array([proposal.weights[g] for g in groups]),
                proposal.temperatures,
            ),
            prior_job,
            job("verify-uniform", -1, "uniform", uniform),
        ]
        verified = _run_proxies(vjobs, executor, resources, opts, progress)
        verify = {}
        for rec in verified + [best]:
            role = "best_swarm" if rec is best else rec["role"]
            verify[role] = R.verified(rec, tw, float(objective(features(rec, groups, box)[None, :])[0]))

    all_records = records + verified
    table_uri = R.write_table(layout, all_records, groups, search, opts, fits)
    card = R.write_fit(layout, fits, search, len(records), opts)
    proposal_uri = R.write_proposal(
        layout, R.proposal_spec(search, proposal.weights, available, proposal.temperatures), opts
    )
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
        "best_swarm": {
            "id": best["id"],
            "weights": best["weights"],
            "objective": R.objective_of(best["losses"], tw),
            **({"temperatures": best["temperatures"]} if box is not None else {}),
        },
        "verify": verify,
        "code_version": __version__,
        "timestamps": {"started": started, "committed": storage.utc_timestamp()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if box is not None:  # the key only where temperatures were searched: a manifest without it is unchanged
        manifest["quality_temperature"] = {"groups": list(box.groups), "min": qt.min, "max": qt.max, "own": own}
    contracts.validate(manifest, contracts.OptimizationManifest)
    body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    if not storage.create_only(manifest_uri, body, opts):
        manifest = storage.read_json(manifest_uri, opts)  # a concurrent identical run finished first
    return manifest
