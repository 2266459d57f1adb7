"""Regressors from a mixture's weights to a target's loss, chosen per target by k-fold CV.

- `lightgbm` (RegMix): gradient-boosted trees on the weight vector; settings for small swarms (a
  leaf may hold 2 proxies, LightGBM's default of 20 would never split 16 of them).
- `loglinear` (data-mixing laws, olmix): loss = c + k x exp(sum_j t_j w_j), fitted by least
  squares (scipy) from several starting offsets c; smooth, so it extrapolates and can be optimised
  directly. A small ridge on t keeps it identifiable (the weights sum to 1, so t + a and k x e^-a
  are the same law). Monotone along every line of the simplex, so its optimum is always a
  corner: right for a target that is one group's kind of text, wrong for one that mixes several.
- `logshare`: loss = c + sum_j a_j x -log(w_j + eps), a_j >= 0 (non-negative least squares, eps
  from a small grid): the cross-entropy shape of a target that mixes the groups, each group's
  share lowering the loss on its part of the target with diminishing returns (the log form of
  BiMix's per-domain power law). Its optimum is inside the simplex, at w_j + eps proportional to
  a_j where the bounds allow: the regressor for mixed targets, whose optimum `loglinear` cannot express.

QuaDMix (a search of quality-sampling temperatures too): X holds the G weights, then one column per
searched temperature, its log (z = log T). LightGBM splits on them as on any feature; loglinear takes
them inside its exponent (t . [w, z]); logshare adds them as free-sign linear terms, loss = c + sum_j
a_j -log(w_j + eps) + sum_k b_k z_k, so its optimum in each temperature is one of its bounds (a
monotone effect: favour high scores or not), which is the simple law; LightGBM is there for the rest.
`n_weights` (default: every column) says where the weights end.

`fit_target` scores every regressor on the same folds by pooled out-of-fold predictions
(Spearman, the ranking that choosing a mixture needs; MAE beside it), keeps the best by Spearman
(ties: lower MAE) and refits it on every proxy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from mixforge.strict import StrictModel

RegressorName = Literal["lightgbm", "loglinear", "logshare"]


class FitOptions(StrictModel):
    regressors: list[RegressorName] = Field(
        ["lightgbm", "loglinear", "logshare"],
        min_length=1,
        description="Regressors tried per target; the best by CV is kept. `logshare` (c + sum a_j -log(w_j + eps)) "
        "is the one whose optimum can lie inside the space: a target that mixes several groups' text needs it "
        "(loglinear's optimum is always a corner).",
    )
    folds: int = Field(5, ge=2, description="k of the k-fold cross-validation (at most the number of proxies).")
    seed: int = Field(0, ge=0, description="Seed of the fold split and of LightGBM.")


class Regressor(Protocol):
    name: str
    smooth: bool  # differentiable in the weights: a direct optimiser can follow it

    def fit(self, X: np.ndarray, y: np.ndarray) -> Regressor: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...


class LightGBMRegressor:
    name = "lightgbm"
    smooth = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> LightGBMRegressor:
        import lightgbm as lgb

        n = len(y)
        self.model = lgb.LGBMRegressor(
            objective="regression",
            n_estimators=500,
            learning_rate=0.03,
            num_leaves=15,
            min_child_samples=max(2, min(20, n // 8)),
            min_data_in_bin=1,
            subsample=1.0,
            colsample_bytree=1.0,
            random_state=self.seed,
            deterministic=True,
            n_jobs=1,
            verbose=-1,
        )
        self.model.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(np.asarray(X, dtype=np.float64)))

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "model": self.model.booster_.model_to_string()}


class LogLinearRegressor:
    """loss = c + k exp(t . w), k > 0 (parameterised as exp(log_k))."""

    name = "loglinear"
    smooth = True

    def __init__(self, ridge: float = 1e-3) -> None:
        self.ridge = ridge
        self.c = 0.0
        self.log_k = 0.0
        self.t = np.zeros(0)

    def _residuals(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, log_k, t = theta[0], theta[1], theta[2:]
        pred = c + np.exp(np.clip(log_k + X @ t, -50, 50))
        return np.concatenate([pred - y, np.sqrt(self.ridge) * t])

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogLinearRegressor:
        from scipy.optimize import least_squares

        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        spread = max(float(y.max() - y.min()), 1e-6)
        best = None
        # Starting points: c below the smallest loss by several fractions of the spread; log-linear
        # least squares of log(y - c) on the weights gives k and t for each.
        for gap in (0.05, 0.3, 1.0, 3.0):
            c0 = float(y.min()) - gap * spread
            A = np.hstack([np.ones((len(y), 1)), X])
            coef = np.linalg.lstsq(A, np.log(y - c0), rcond=None)[0]
            theta0 = np.concatenate([[c0, coef[0]], coef[1:]])
            fit = least_squares(self._residuals, theta0, args=(X, y), method="trf", max_nfev=2000)
            if best is None or fit.cost < best.cost:
                best = fit
        self.c, self.log_k, self.t = float(best.x[0]), float(best.x[1]), best.x[2:]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self.c + np.exp(np.clip(self.log_k + X @ self.t, -50, 50))

    def state(self) -> dict[str, Any]:
        return {"kind": self.name, "c": self.c, "k": float(np.exp(self.log_k)), "t": self.t.tolist()}


class LogShareRegressor:
    """loss = c + sum_j a_j x -log(w_j + eps) + sum_k b_k x_k, a >= 0: the first `n_weights` columns are
    weights, any after them (log-temperatures) enter linearly with a free sign."""

    name = "logshare"
    smooth = True
    EPSILONS = (1e-3, 1e-2, 3e-2, 1e-1)  # the floor of a share: how hard a group's absence is penalised

    def __init__(self, n_weights: int | None = None) -> None:
        self.n_weights = n_weights
        self.c, self.a, self.b, self.eps = 0.0, np.zeros(0), np.zeros(0), self.EPSILONS[0]

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = X.shape[1] if self.n_weights is None else self.n_weights
        return X[:, :g], X[:, g:]

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogShareRegressor:
        from scipy.optimize import nnls

        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        W, E = self._split(X)
        ones = np.ones((len(y), 1))
        best = None
        for eps in self.EPSILONS:
            # c = c+ - c- (and b likewise), all >= 0, so that NNLS leaves them free and only a non-negative
            A = np.hstack([ones, -ones, -np.log(W + eps), E, -E])
            coef, residual = nnls(A, y, maxiter=50 * A.shape[1])
            if best is None or residual < best[0]:
                best = (residual, eps, coef)
        _, self.eps, coef = best
        g, k = W.shape[1], E.shape[1]
        self.c, self.a = float(coef[0] - coef[1]), coef[2 : 2 + g]
        self.b = coef[2 + g : 2 + g + k] - coef[2 + g + k :]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        W, E = self._split(np.atleast_2d(np.asarray(X, dtype=np.float64)))
        return self.c - np.log(W + self.eps) @ self.a + E @ self.b

    def state(self) -> dict[str, Any]:
        state = {"kind": self.name, "c": self.c, "a": self.a.tolist(), "eps": self.eps}
        if len(self.b):
            state["b"] = self.b.tolist()  # per log-temperature column
        return state


def make_regressor(name: RegressorName, seed: int = 0, n_weights: int | None = None) -> Regressor:
    """`n_weights`: how many of X's columns are weights (the rest: log-temperatures); None: all."""
    if name == "lightgbm":
        return LightGBMRegressor(seed)
    if name == "loglinear":
        return LogLinearRegressor()
    if name == "logshare":
        return LogShareRegressor(n_weights)
    raise ValueError(f"unknown regressor {name!r} (lightgbm, loglinear or logshare)")


@dataclass
class CVScore:
    regressor: str
    spearman: float  # of the pooled out-of-fold predictions against the actual losses (nan: constant)
    mae: float
    oof: np.ndarray = field(repr=False)  # out-of-fold prediction of each proxy

    def report(self) -> dict[str, Any]:
        return {"regressor": self.regressor, "spearman": _num(self.spearman), "mae": _num(self.mae)}


@dataclass
class TargetFit:
    """The regressor kept for one target (refitted on every proxy) and every regressor's CV score."""

    target: str
    chosen: str
    model: Regressor
    scores: dict[str, CVScore]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(X)

    def report(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "chosen": self.chosen,
            "cv": [s.report() for s in self.scores.values()],
            "model": self.model.state(),
        }


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold of each of n items: a seeded shuffle dealt round-robin (fold sizes differ by <= 1)."""
    k = min(folds, n)
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return out


def cross_validate(
    X: np.ndarray, y: np.ndarray, name: RegressorName, folds: int, seed: int = 0, n_weights: int | None = None
) -> CVScore:
    ids = fold_ids(len(y), folds, seed)
    oof = np.empty(len(y))
    for f in np.unique(ids):
        test = ids == f
        oof[test] = make_regressor(name, seed, n_weights).fit(X[~test], y[~test]).predict(X[test])
    return CVScore(name, spearman(oof, y), float(np.mean(np.abs(oof - y))), oof)


def fit_target(
    X: np.ndarray,
    y: np.ndarray,
    target: str = "target",
    options: FitOptions = FitOptions(),
    n_weights: int | None = None,
) -> TargetFit:
    """Cross-validate each of options.regressors on the proxies' weights X (n, G) (then their log-temperatures,
    if any: `n_weights` = G) and losses y (n,), keep the best by Spearman (ties, or no ranking at all: lower
    MAE) and refit it on all of them."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, groups) and y (n,), got {X.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"fitting needs at least 3 proxies, got {len(y)}")
    scores = {name: cross_validate(X, y, name, options.folds, options.seed, n_weights) for name in options.regressors}

    def rank(s: CVScore) -> tuple[float, float]:
        return (-(s.spearman if s.spearman == s.spearman else -2.0), s.mae)

    chosen = min(scores.values(), key=rank).regressor
    return TargetFit(target, chosen, make_regressor(chosen, options.seed, n_weights).fit(X, y), scores)


def fit_targets(
    X: np.ndarray,
    losses: Mapping[str, Sequence[float]],
    options: FitOptions = FitOptions(),
    n_weights: int | None = None,
) -> dict[str, TargetFit]:
    """One `fit_target` per target: losses maps a target's name to each proxy's loss on it (rows of X)."""
    return {name: fit_target(X, np.asarray(y), name, options, n_weights) for name, y in losses.items()}
