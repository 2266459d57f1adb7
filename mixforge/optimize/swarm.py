"""The swarm: mixtures sampled around a prior, within per-group bounds and epoch caps.

RegMix's scheme: weights ~ Dirichlet(scale x prior), where the scale (the concentration) is fixed or
drawn log-uniformly per sample from a range, so the swarm holds both near-one-hot mixtures and
mixtures close to the prior. A sample outside its bounds is rejected; when the bounds are so tight
that rejection would take too long, the rest are projected onto the bounded simplex (the nearest
feasible point), so a narrow search space still gets its N mixtures. Deterministic by seed.

The epoch cap becomes an upper bound on each group's share: at a budget of B tokens, share_g x B <=
cap x available_tokens_g, so no mixture repeats a group more than `cap` times ("To Repeat or Not To
Repeat": up to ~4 epochs cost little).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mixforge.config_errors import ConfigError

# Draws per batch of rejection sampling, as a multiple of what is still missing, and batches tried.
_OVERSAMPLE = 4
_REJECTION_ROUNDS = 8
_TINY = 1e-12


@dataclass(frozen=True)
class Space:
    """The feasible weights: groups in order, the prior and each group's [lower, upper] share."""

    groups: tuple[str, ...]
    prior: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def contains(self, weights: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Per row of `weights` (n, G): on the simplex and within the bounds."""
        w = np.atleast_2d(weights)
        return (
            (np.abs(w.sum(axis=1) - 1) <= 1e-6)
            & np.all(w >= self.lower - tol, axis=1)
            & np.all(w <= self.upper + tol, axis=1)
        )

    def as_dict(self, weights: np.ndarray) -> dict[str, float]:
        return {g: float(w) for g, w in zip(self.groups, weights)}


def epoch_caps(available_tokens: Mapping[str, float], budget_tokens: float, epoch_cap: float) -> dict[str, float]:
    """Each group's largest share at this budget: cap x available / budget, at most 1."""
    if budget_tokens <= 0:
        raise ConfigError(f"budget_tokens must be positive, got {budget_tokens}")
    return {g: min(1.0, epoch_cap * float(n) / budget_tokens) for g, n in available_tokens.items()}


def make_space(
    prior: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]] | None = None,
    caps: Mapping[str, float] | None = None,
) -> Space:
    """The search space over `prior`'s groups (in its order): bounds (min, max) per group (default
    0, 1), tightened by the caps (largest share). ConfigError when no mixture fits, naming why."""
    groups = tuple(prior)
    if not groups:
        raise ConfigError("the search space has no groups")
    p = np.array([float(prior[g]) for g in groups])
    if np.any(p < 0) or p.sum() <= 0:
        raise ConfigError(f"prior: shares must be >= 0 with a positive sum, got {dict(prior)}")
    bounds, caps = bounds or {}, caps or {}
    unknown = sorted((set(bounds) | set(caps)) - set(groups))
    if unknown:
        raise ConfigError(f"bounds or caps name groups not in the prior: {unknown}")
    lower = np.array([float(bounds.get(g, (0.0, 1.0))[0]) for g in groups])
    upper = np.array([min(float(bounds.get(g, (0.0, 1.0))[1]), float(caps.get(g, 1.0))) for g in groups])
    crossed = [g for g, lo, hi in zip(groups, lower, upper) if lo > hi + _TINY]
    if crossed:
        raise ConfigError(
            "bounds: the minimum share is above the maximum (after the epoch cap) for groups "
            + ", ".join(f"{g} (min {bounds[g][0]}, max {hi:.4g})" for g, hi in zip(groups, upper) if g in crossed)
        )
    if lower.sum() > 1 + _TINY:
        raise ConfigError(f"bounds: the minimum shares add up to {lower.sum():.4g} > 1")
    if upper.sum() < 1 - _TINY:
        raise ConfigError(
            f"bounds and epoch caps: the maximum shares add up to {upper.sum():.4g} < 1 (raise the budget's "
            "available tokens, the epoch cap or the max bounds, or lower the budget)"
        )
    return Space(groups, p / p.sum(), lower, upper)


def project(points: np.ndarray, lower: np.ndarray, upper: np.ndarray, iterations: int = 60) -> np.ndarray:
    """The Euclidean projection of each row onto {w: sum w = 1, lower <= w <= upper}: w = clip(x - t)
    with the shift t found by bisection (the sum is monotone in t)."""
    x = np.atleast_2d(points).astype(np.float64)
    lo = (x - upper).min(axis=1) - 1.0
    hi = (x - lower).max(axis=1) + 1.0
    for _ in range(iterations):
        t = (lo + hi) / 2
        s = np.clip(x - t[:, None], lower, upper).sum(axis=1)
        too_big = s > 1
        lo = np.where(too_big, t, lo)
        hi = np.where(too_big, hi, t)
    w = np.clip(x - ((lo + hi) / 2)[:, None], lower, upper)
    return w / w.sum(axis=1, keepdims=True)


def _dirichlet(rng: np.random.Generator, prior: np.ndarray, n: int, concentration) -> np.ndarray:
    if isinstance(concentration, int | float):
        scales = np.full(n, float(concentration))
    else:
        lo, hi = concentration
        scales = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    alpha = np.maximum(scales[:, None] * prior[None, :], 1e-3)  # a zero prior share still gets explored
    draws = rng.gamma(alpha)
    total = draws.sum(axis=1, keepdims=True)
    # A draw whose every gamma underflowed (tiny alpha): the one largest alpha wins.
    empty = total[:, 0] <= 0
    if np.any(empty):
        draws[empty] = np.eye(len(prior))[np.argmax(alpha[empty], axis=1)]
        total = draws.sum(axis=1, keepdims=True)
    return draws / total


def sample_weights(
    prior: Mapping[str, float],
    n: int,
    seed: int,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    caps: Mapping[str, float] | None = None,
    concentration: float | Sequence[float] = (0.1, 5.0),
) -> np.ndarray:
    """`n` mixtures (rows of an (n, G) array, columns in `prior`'s order) from Dirichlet(scale x prior),
    each within `bounds` ((min, max) share per group) and `caps` (largest share per group, see
    `epoch_caps`). `concentration`: the scale, or a (low, high) range it is drawn from log-uniformly
    per mixture (RegMix). Rejection first; what is still missing after a few rounds is projected onto
    the bounds. The same arguments give the same array."""
    space = make_space(prior, bounds, caps)
    return sample_space(space, n, seed, concentration)


def sample_space(space: Space, n: int, seed: int, concentration: float | Sequence[float] = (0.1, 5.0)) -> np.ndarray:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not isinstance(concentration, int | float):
        lo, hi = concentration
        if not 0 < lo <= hi:
            raise ConfigError(f"concentration range must satisfy 0 < low <= high, got {concentration}")
    elif concentration <= 0:
        raise ConfigError(f"concentration must be positive, got {concentration}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(_REJECTION_ROUNDS):
        if have >= n:
            break
        draws = _dirichlet(rng, space.prior, max(16, _OVERSAMPLE * (n - have)), concentration)
        ok = draws[space.contains(draws)]
        kept.append(ok[: n - have])
        have += len(kept[-1])
    if have < n:
        kept.append(project(_dirichlet(rng, space.prior, n - have, concentration), space.lower, space.upper))
    out = np.concatenate(kept, axis=0) if kept else np.zeros((0, len(space.groups)))
    return out[:n]


# ----------------------------------------------------------------------------- QuaDMix: sampling temperatures


@dataclass(frozen=True)
class TemperatureBox:
    """The searched quality-sampling temperatures (QuaDMix): one per group, searched as z = log T within
    [log min, log max] (the effect of T on a sample is multiplicative: exp(score/T)). Each is drawn from its
    own seeded stream, so adding temperatures leaves the weights a seed gives unchanged."""

    groups: tuple[str, ...]
    low: float  # log of the lowest temperature
    high: float  # log of the highest

    @classmethod
    def of(cls, groups, t_min: float, t_max: float) -> TemperatureBox:
        return cls(tuple(groups), float(np.log(t_min)), float(np.log(t_max)))

    @property
    def lower(self) -> np.ndarray:
        return np.full(len(self.groups), self.low)

    @property
    def upper(self) -> np.ndarray:
        return np.full(len(self.groups), self.high)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """(n, K) log-temperatures, log-uniform within the bounds."""
        rng = np.random.default_rng([seed, 0x7E])  # not the weights' stream
        return rng.uniform(self.low, self.high, size=(n, len(self.groups)))

    def around(self, center: np.ndarray, n: int, seed: int, spread: float = 0.15) -> np.ndarray:
        """(n, K) log-temperatures near `center` (CLIMB rounds): normal with sd `spread` x the log range,
        reflected at the bounds (a center on a bound, where a monotone effect puts the proposal, still gets
        distinct draws; clipping would pile them on the bound)."""
        rng = np.random.default_rng([seed, 0x7E])
        z = np.asarray(center)[None, :] + rng.normal(0, spread * (self.high - self.low), size=(n, len(self.groups)))
        z = np.where(z < self.low, 2 * self.low - z, z)
        z = np.where(z > self.high, 2 * self.high - z, z)
        return np.clip(z, self.low, self.high)

    def as_dict(self, z: np.ndarray) -> dict[str, float]:
        """group -> temperature (not its log)."""
        return {g: float(np.exp(v)) for g, v in zip(self.groups, np.atleast_1d(z))}

    def of_dict(self, temperatures: Mapping[str, float]) -> np.ndarray:
        return np.log(np.array([float(temperatures[g]) for g in self.groups]))
