"""Regression and proposal on synthetic swarms with a known answer: the loss is a known function of
the weights plus noise, so held-out ranking and the proposal's distance to the optimum are checked
against the truth, and the same run with the losses shuffled must miss it."""

from __future__ import annotations

import numpy as np
import pytest

from mixforge.optimize.fit import FitOptions, fit_target, fit_targets, fold_ids, spearman
from mixforge.optimize.propose import ProposeOptions, propose, weighted_objective
from mixforge.optimize.swarm import make_space, sample_weights

# The target is a mixture of the groups in this ratio: its loss is lowest at these weights.
OPTIMUM = np.array([0.5, 0.3, 0.15, 0.05])
PRIOR = {g: 0.25 for g in ("a", "b", "c", "d")}
FAST = ProposeOptions(candidates=20_000, top_k=100)


def cross_entropy_loss(W: np.ndarray) -> np.ndarray:
    """A proxy's loss on a target that mixes the groups as OPTIMUM: minimal at W = OPTIMUM."""
    return 2.0 - (np.log(W + 0.01) * OPTIMUM).sum(axis=1)


def swarm(n: int, seed: int, noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    W = sample_weights(PRIOR, n, seed)
    return W, cross_entropy_loss(W) + np.random.default_rng(seed).normal(0, noise, n)


def proposal_error(W: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The proposal's largest per-group distance to OPTIMUM, fitted on (W, y)."""
    fit = fit_target(W, y, "t", FitOptions(folds=5))
    proposal = propose(weighted_objective({"t": fit}, {"t": 1.0}), make_space(PRIOR), FAST)
    w = np.array([proposal.weights[g] for g in PRIOR])
    return float(np.abs(w - OPTIMUM).max()), {"fit": fit, "proposal": proposal}


def test_known_answer_fit_ranks_held_out_proxies_and_proposes_the_optimum():
    W, y = swarm(128, seed=0)
    fit = fit_target(W, y, "t")
    assert set(fit.scores) == {"lightgbm", "loglinear", "logshare"}
    assert fit.chosen == max(fit.scores.values(), key=lambda s: s.spearman).regressor
    assert all(s.mae > 0 and -1 <= s.spearman <= 1 for s in fit.scores.values())
    held_out = sample_weights(PRIOR, 64, seed=100)
    truth = cross_entropy_loss(held_out)
    assert spearman(fit.predict(held_out), truth) >= 0.8

    error, found = proposal_error(W, y)
    assert error <= 0.12, found["proposal"].report()
    # Both methods are reported, each feasible.
    for alt in found["proposal"].alternatives.values():
        assert abs(sum(alt["weights"].values()) - 1) < 1e-6 and alt["predicted"] == alt["predicted"]

    # With the losses shuffled the same pipeline cannot find it: the check above is not by construction.
    shuffled = np.random.default_rng(99).permutation(y)
    error_shuffled, _ = proposal_error(W, shuffled)
    assert error_shuffled > 0.2


def test_loglinear_law_is_recovered_chosen_and_optimised_within_bounds():
    # loss = c + k exp(t . w): the optimum puts the most weight the bounds allow on the most negative t.
    t = np.array([-2.0, -1.0, 0.0, 1.0])
    W = sample_weights(PRIOR, 40, seed=3)
    y = 1.5 + 0.8 * np.exp(W @ t) + np.random.default_rng(3).normal(0, 0.002, len(W))
    fit = fit_target(W, y, "law")
    assert fit.chosen == "loglinear" and fit.scores["loglinear"].spearman > 0.95
    state = fit.report()["model"]
    assert state["kind"] == "loglinear" and abs(state["c"] - 1.5) < 0.1
    space = make_space(PRIOR, bounds={g: (0.1, 0.6) for g in PRIOR})
    proposal = propose(
        weighted_objective({"law": fit}, {"law": 1}), space, FAST.model_copy(update={"method": "slsqp"})
    )
    assert proposal.method == "slsqp"
    np.testing.assert_allclose([proposal.weights[g] for g in PRIOR], [0.6, 0.2, 0.1, 0.1], atol=0.02)
    assert proposal.predicted <= proposal.alternatives["sample-average"]["predicted"] + 1e-9


def test_targets_are_weighted_in_the_objective():
    W, _ = swarm(48, seed=1)
    # Two targets that each want one group: the heavier target's group wins.
    losses = {"wants-a": 3 - np.log(W[:, 0] + 0.01), "wants-b": 3 - np.log(W[:, 1] + 0.01)}
    fits = fit_targets(W, losses, FitOptions(regressors=["loglinear"], folds=4))
    space = make_space(PRIOR)
    heavy_a = propose(weighted_objective(fits, {"wants-a": 4, "wants-b": 1}), space, FAST).weights
    heavy_b = propose(weighted_objective(fits, {"wants-a": 1, "wants-b": 4}), space, FAST).weights
    assert heavy_a["a"] > heavy_a["b"] and heavy_b["b"] > heavy_b["a"]
    with pytest.raises(ValueError, match="targets without a fit"):
        weighted_objective(fits, {"other": 1})


def test_folds_are_balanced_and_seeded():
    ids = fold_ids(17, 5, seed=0)
    assert sorted(np.bincount(ids).tolist()) == [3, 3, 3, 4, 4]
    np.testing.assert_array_equal(ids, fold_ids(17, 5, seed=0))
    assert not np.array_equal(ids, fold_ids(17, 5, seed=1))
    with pytest.raises(ValueError, match="at least 3 proxies"):
        fit_target(np.eye(2), np.array([1.0, 2.0]))
