"""What a mixture optimisation run writes, and what is done with it after: the run's layout, the proxies
table, the saved regressors and their card, the proposal as a mixture spec, the `--json` summary,
and `materialize` (the proposal built as a new version of the mixture, linking the run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mixforge import storage
from mixforge.config import load_model
from mixforge.executor import Executor
from mixforge.mixtures.spec import MixSpec
from mixforge.names import validate_name
from mixforge.optimize.fit import TargetFit
from mixforge.optimize.search import SearchSpec


@dataclass(frozen=True)
class OptimizeLayout:
    """`{store}/optimize/{name}/{run_id}/` and its files (listed in mixforge/optimize/run.py)."""

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


def spec_with(base: MixSpec, **changes: Any) -> MixSpec:
    """`base` with top-level fields replaced, validated again."""
    return MixSpec.model_validate({**base.model_dump(mode="json"), **changes})


def groups_with(
    base: MixSpec,
    weights: Mapping[str, float],
    max_epochs: Mapping[str, float],
    temperatures: Mapping[str, float] | None = None,
) -> list[dict]:
    """`base`'s groups (dumped) with these weights (a group left out: 0), epoch caps (left out: its own) and
    quality-sampling temperatures (QuaDMix; left out: its own)."""
    groups = []
    for g in base.model_dump(mode="json")["groups"]:
        g["weight"] = float(weights.get(g["name"], 0.0))
        g["max_epochs"] = float(max_epochs.get(g["name"], g["max_epochs"]))
        if temperatures and g["name"] in temperatures:  # the search checked that the group samples by quality
            g["sampling"]["temperature"] = float(temperatures[g["name"]])
        groups.append(g)
    return groups


def own_temperatures(search: SearchSpec) -> dict[str, float] | None:
    """The mixture spec's own temperature of each searched-temperature group (None: no temperature searched)."""
    groups = search.temperature_groups()
    if not groups:
        return None
    mixture = search.mixture_spec()
    return {g: float(mixture.group(g).sampling.temperature) for g in groups}


def objective_of(losses: Mapping[str, float], target_weights: Mapping[str, float]) -> float:
    total = sum(target_weights.values())
    return float(sum(w / total * losses[t] for t, w in target_weights.items()))


def write_fit(layout: OptimizeLayout, fits: dict[str, TargetFit], search: SearchSpec, n: int, opts) -> dict:
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


def proposal_spec(
    search: SearchSpec,
    weights: Mapping[str, float],
    available: Mapping[str, int],
    temperatures: Mapping[str, float] | None = None,
) -> MixSpec:
    """The search's mixture spec with the proposed shares: searched groups share what the spec's own
    weights leave to them, at the search's budget and epoch cap; other groups keep their shares. With
    searched temperatures, those groups' quality sampling takes the proposed ones."""
    from mixforge.mixtures.plan import phase_shares

    mixture = search.mixture_spec()
    requested = phase_shares(mixture, mixture.effective_phases()[0], dict(available))
    searched = search.group_names()
    mass = 1.0 - sum(s for g, s in requested.items() if g not in searched)
    shares = {g: round(requested.get(g, 0.0), 9) for g in (x.name for x in mixture.groups) if g not in searched}
    shares |= {g: round(mass * weights[g], 9) for g in searched}
    return spec_with(
        mixture,
        groups=groups_with(mixture, shares, {g: search.epoch_cap for g in searched}, temperatures),
        budget_tokens=search.budget(),
        budget_fraction=None,
        temperature=None,
    )


def write_proposal(layout: OptimizeLayout, spec: MixSpec, opts) -> str:
    uri = layout.path("proposal.yaml")
    header = (
        f"# Proposed by mixforge optimize: {layout.name} run {layout.run_id} ({layout.dir}).\n"
        "# Build it with `mixforge mix --spec proposal.yaml`, or materialize the run.\n"
    )
    data = spec.model_dump(mode="json", exclude_defaults=True)
    body = yaml.safe_dump(data, sort_keys=False)
    storage.write_bytes(uri, (header + body).encode(), opts)
    return uri


def write_table(
    layout: OptimizeLayout, records: list[dict], groups, search: SearchSpec, opts, fits: Mapping[str, TargetFit]
) -> str:
    """proxies.parquet: one row per proxy; `temperature_<group>` for searched temperatures (QuaDMix);
    `predicted_<target>`: the chosen regressor's out-of-fold prediction for the fitted (swarm) proxies,
    the first rows (null for the verification proxies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list] = {"id": [], "round": [], "role": []}
    temperature_groups = search.temperature_groups()
    columns |= {f"weight_{g}": [] for g in groups} | {f"temperature_{g}": [] for g in temperature_groups}
    columns |= {f"loss_{t.name}": [] for t in search.targets}
    for t in search.targets:
        oof = fits[t.name].scores[fits[t.name].chosen].oof.tolist()
        columns[f"predicted_{t.name}"] = oof + [None] * (len(records) - len(oof))
    columns |= {"objective": [], "tokens": [], "seconds": [], "params": [], "device": []}
    for r in records:
        for key in ("id", "round", "role", "tokens", "seconds", "params", "device"):
            columns[key].append(r[key])
        for g in groups:
            columns[f"weight_{g}"].append(r["weights"][g])
        for g in temperature_groups:
            columns[f"temperature_{g}"].append(r["temperatures"][g])
        for t in search.targets:
            columns[f"loss_{t.name}"].append(r["losses"][t.name])
        columns["objective"].append(objective_of(r["losses"], search.target_weights()))
    uri = layout.path("proxies.parquet")
    with storage.atomic_open(uri, opts) as f:
        pq.write_table(pa.table(columns), f)
    return uri


def verified(rec: dict, target_weights: Mapping[str, float], predicted: float) -> dict[str, Any]:
    out = {
        "id": rec["id"],
        "weights": rec["weights"],
        "losses": rec["losses"],
        "objective": objective_of(rec["losses"], target_weights),
        "predicted": predicted,
    }
    if "temperatures" in rec:
        out["temperatures"] = rec["temperatures"]
    return out


# ----------------------------------------------------------------------------- after the run


def optimize_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The `--json` summary of an optimisation run (OptimizeSummary), from its manifest."""
    verify = manifest.get("verify")
    summary = {
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
    if "temperatures" in manifest["proposal"]:  # QuaDMix: the key only where temperatures were searched
        summary["temperatures"] = manifest["proposal"]["temperatures"]
    return summary


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
            # QuaDMix: the quality-sampling temperatures chosen by the search (absent: the spec's own)
            **({"temperatures": t} if (t := manifest["proposal"].get("temperatures")) is not None else {}),
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
