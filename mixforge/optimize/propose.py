"""The proposal: the predicted optimum of the weighted target losses within the bounds and epoch caps.

Two ways, both always computed and reported:
- `sample-average` (RegMix): many candidates from the swarm's Dirichlet within the space, predicted,
  and the mean of the top-k (lowest predicted loss); the mean of feasible points is feasible (the
  space is convex) and averaging smooths a tree model's steps.
- `slsqp`: scipy's SLSQP on the simplex with the bounds, from the sample-average point and the best
  candidates; it follows smooth regressors (log-linear) and stays put on a tree model's flat steps.
`ProposeOptions.method` says which one is the proposal.

With searched temperatures (QuaDMix, a `TemperatureBox`), a point is [weights, log-temperatures]: the
candidates draw the log-temperatures uniformly within their bounds, SLSQP bounds them there too (the
simplex constraint is on the weights only), and the proposal carries the temperatures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixforge.optimize.fit import TargetFit
from mixforge.optimize.swarm import Space, TemperatureBox, project, sample_space
from mixforge.strict import StrictModel

Objective = Callable[[np.ndarray], np.ndarray]  # (n, G) weights (then K log-temperatures) -> (n,) predicted loss


class ProposeOptions(StrictModel):
    method: Literal["sample-average", "slsqp"] = Field(
        "sample-average", description="Which computed optimum becomes the proposal (both are reported)."
    )
    candidates: int = Field(100_000, ge=1, description="Candidates sampled for sample-average (RegMix: 1M).")
    top_k: int = Field(100, ge=1, description="Best candidates averaged (RegMix: 100).")
    starts: int = Field(
        4, ge=1, description="SLSQP starting points: the sample-average point and the best candidates."
    )
    seed: int = Field(0, ge=0, description="Seed of the candidates.")


@dataclass
class Proposal:
    weights: dict[str, float]
    predicted: float  # weighted predicted loss at `weights`
    method: str
    alternatives: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> {weights, predicted}
    temperatures: dict[str, float] | None = None  # searched group -> quality-sampling temperature (QuaDMix)

    def report(self) -> dict[str, Any]:
        out = {"method": self.method, "weights": self.weights, "predicted": self.predicted}
        if self.temperatures is not None:  # the key only where searched: outputs without it are unchanged
            out["temperatures"] = self.temperatures
        return {**out, "alternatives": self.alternatives}


def weighted_objective(fits: Mapping[str, TargetFit], target_weights: Mapping[str, float]) -> Objective:
    """sum_t weight_t x predicted loss_t, over the targets with a fit (weights normalised)."""
    missing = sorted(set(target_weights) - set(fits))
    if missing:
        raise ValueError(f"targets without a fit: {missing}")
    total = sum(target_weights.values())
    if total <= 0:
        raise ValueError(f"target weights must have a positive sum, got {dict(target_weights)}")
    parts = [(fits[t], w / total) for t, w in target_weights.items() if w > 0]
    return lambda W: sum(w * f.predict(np.atleast_2d(W)) for f, w in parts)


def sample_average(
    objective: Objective,
    space: Space,
    options: ProposeOptions = ProposeOptions(),
    concentration: float | tuple[float, float] = (0.1, 5.0),
    temperatures: TemperatureBox | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the top_k candidates by predicted loss, and the candidates sorted best first."""
    cands = sample_space(space, options.candidates, options.seed, concentration)
    if temperatures is not None:
        cands = np.hstack([cands, temperatures.sample(options.candidates, options.seed)])
    pred = np.asarray(objective(cands))
    order = np.argsort(pred, kind="stable")
    best = cands[order[: options.top_k]].mean(axis=0)
    g = len(space.groups)
    best[:g] /= best[:g].sum()
    return best, cands[order]


def slsqp(
    objective: Objective, space: Space, starts: np.ndarray, temperatures: TemperatureBox | None = None
) -> np.ndarray:
    """The best SLSQP result over `starts` (rows) on {sum w = 1, lower <= w <= upper} (and the
    log-temperatures, if any, within their bounds)."""
    from scipy.optimize import minimize

    g = len(space.groups)
    lower, upper = space.lower, space.upper
    if temperatures is not None:
        lower, upper = np.concatenate([lower, temperatures.lower]), np.concatenate([upper, temperatures.upper])

    def f(x: np.ndarray) -> float:
        return float(objective(x[None, :])[0])

    best_x, best_f = None, np.inf
    for x0 in np.atleast_2d(starts):
        res = minimize(
            f,
            x0,
            method="SLSQP",
            bounds=list(zip(lower, upper)),
            constraints=[{"type": "eq", "fun": lambda x: x[:g].sum() - 1.0}],
            options={"maxiter": 200, "ftol": 1e-10},
        )
        # exactly feasible after the solver's tolerance
        x = np.concatenate([project(res.x[:g], space.lower, space.upper)[0], np.clip(res.x[g:], lower[g:], upper[g:])])
        fx = f(x)
        if fx < best_f:
            best_x, best_f = x, fx
    return best_x


def propose(
    objective: Objective,
    space: Space,
    options: ProposeOptions = ProposeOptions(),
    concentration: float | tuple[float, float] = (0.1, 5.0),
    temperatures: TemperatureBox | None = None,
) -> Proposal:
    """Both optima of `objective` within `space` (and `temperatures`); options.method picks the proposal."""
    averaged, ranked = sample_average(objective, space, options, concentration, temperatures)
    direct = slsqp(objective, space, np.vstack([averaged, ranked[: max(0, options.starts - 1)]]), temperatures)
    g = len(space.groups)
    alternatives = {}
    for m, x in {"sample-average": averaged, "slsqp": direct}.items():
        alternatives[m] = {"weights": space.as_dict(x[:g]), "predicted": float(objective(x[None, :])[0])}
        if temperatures is not None:
            alternatives[m]["temperatures"] = temperatures.as_dict(x[g:])
    chosen = alternatives[options.method]
    return Proposal(chosen["weights"], chosen["predicted"], options.method, alternatives, chosen.get("temperatures"))
