"""The `logshare` regressor: a target that mixes groups has its lowest loss inside the simplex, which
`loglinear` (monotone along every line, so optimal at a corner) cannot propose; with 16 proxies
`logshare` ranks held-out proxies, is chosen by CV, and proposes the mixture, within the bounds."""

from __future__ import annotations

import numpy as np
import pytest

from mixforge.optimize.fit import FitOptions, LogShareRegressor, fit_target, spearman
from mixforge.optimize.propose import ProposeOptions, propose, weighted_objective
from mixforge.optimize.swarm import make_space, sample_weights

PRIOR = {"books": 0.3, "tech": 0.35, "web": 0.35}
MIX = np.array([0.7, 0.3, 0.0])  # the target: 70 % books-like, 30 % tech-like text, no web
FAST = ProposeOptions(candidates=20_000, top_k=100)


def mixed_target_loss(W: np.ndarray) -> np.ndarray:
    """A proxy's loss on the mixed target: each part's loss falls with its group's share (a floor
    of 0.02, which is not among logshare's eps: the law is not fitted exactly)."""
    return 3.0 - (np.log(W[:, :2] + 0.02) * MIX[:2]).sum(axis=1)


def swarm(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    W = sample_weights(PRIOR, n, seed)
    return W, mixed_target_loss(W) + np.random.default_rng(seed).normal(0, 0.01, n)


def proposal(W, y, regressors, bounds=None):
    fit = fit_target(W, y, "t", FitOptions(regressors=regressors, folds=5))
    found = propose(weighted_objective({"t": fit}, {"t": 1.0}), make_space(PRIOR, bounds), FAST)
    return fit, np.array([found.weights[g] for g in PRIOR])


def test_logshare_is_chosen_ranks_held_out_proxies_and_proposes_the_mixture():
    W, y = swarm(16, seed=0)
    fit, w = proposal(W, y, ["lightgbm", "loglinear", "logshare"])
    assert fit.chosen == "logshare" and fit.scores["logshare"].spearman >= 0.8
    held_out = sample_weights(PRIOR, 64, seed=7)
    assert spearman(fit.predict(held_out), mixed_target_loss(held_out)) >= 0.9
    assert np.abs(w - MIX).max() <= 0.1, w
    state = fit.model.state()
    assert state["kind"] == "logshare" and min(state["a"]) >= 0 and state["eps"] in LogShareRegressor.EPSILONS


def test_loglinear_alone_proposes_a_corner_and_shuffled_losses_miss():
    W, y = swarm(16, seed=0)
    _, corner = proposal(W, y, ["loglinear"])
    assert corner.max() > 0.95  # the defect logshare exists for: no interior optimum
    _, shuffled = proposal(W, np.random.default_rng(3).permutation(y), ["logshare"])
    assert np.abs(shuffled - MIX).max() > 0.15, shuffled


def test_logshare_recovers_its_law_and_respects_bounds():
    W = sample_weights(PRIOR, 32, seed=1)
    y = 1.5 - np.log(W + 0.01) @ np.array([0.5, 0.2, 0.3])
    model = LogShareRegressor().fit(W, y)
    assert model.eps == 0.01 and model.c == pytest.approx(1.5, abs=1e-6)
    assert model.a == pytest.approx([0.5, 0.2, 0.3], abs=1e-6)
    # Unbounded its optimum is w + eps ~ a; books capped at 0.3 by a bound, the rest is shared out.
    fit = fit_target(W, y, "t", FitOptions(regressors=["logshare"], folds=4))
    bounded = propose(weighted_objective({"t": fit}, {"t": 1.0}), make_space(PRIOR, {"books": (0, 0.3)}), FAST)
    assert bounded.weights["books"] <= 0.3 + 1e-9 and bounded.weights["books"] == pytest.approx(0.3, abs=0.03)
