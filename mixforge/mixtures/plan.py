"""Planning a mixture exactly, in tokens, and drawing it deterministically.

For each phase and group: target tokens = share x budget. A group is taken in full passes plus
one seeded partial pass: the partial pass orders the group's documents (uniformly, by
Efraimidis-Spirakis keys for quality weighting, or over rehydrated copies) and takes the prefix
whose tokens reach the remainder, then fills the last gap with the next documents that fit. So the
realised tokens of a group miss its target by less than one document. A group whose cap
(max_epochs x its tokens) is below its target is short: its shortfall is redistributed over the
other groups in proportion to their shares, or the build fails, as the spec says.

All randomness comes from numpy Generators seeded with the spec seed and a stable hash of the
phase and group names, so the same pool + spec + seed gives the same draw.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from mixforge.mixtures.pool import N_TOKENS, ROW_COL, SHARD_COL, PoolShard, assign_groups
from mixforge.mixtures.spec import GroupSpec, MixSpec, PhaseSpec


class ShortGroupError(ValueError):
    """A group cannot meet its target within its epoch cap and the spec says `on_short: fail`."""


class PlanError(ValueError):
    pass


def stable_seed(seed: int, *names: str) -> np.random.SeedSequence:
    """A SeedSequence from the spec seed and names, stable across processes (not Python's hash())."""
    digest = hashlib.blake2b("\x1f".join(names).encode(), digest_size=8).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest, "little")])


def rng_for(seed: int, *names: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(stable_seed(seed, *names)))


@dataclass
class GroupPlan:
    phase: str
    name: str
    sampling: str
    max_epochs: float
    requested_share: float  # from the spec's weights (after temperature sampling)
    target_share: float  # after redistributing short groups' shortfall
    target_tokens: int
    available_docs: int
    available_tokens: int
    pass_tokens: int  # tokens of one pass (rehydrated: counting repeats)
    cap_tokens: int
    realised_tokens: int = 0
    realised_docs: int = 0  # rows written, repeats included
    unique_docs: int = 0
    max_doc_repeats: int = 0
    short: bool = False
    realised_share: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        return self.realised_tokens / self.available_tokens if self.available_tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epochs"] = round(self.epochs, 6)
        return d


@dataclass
class PhasePlan:
    name: str
    budget_tokens: int
    groups: list[GroupPlan]
    draws: np.ndarray  # frame row of each output row, in output order (globally shuffled)
    draw_group: np.ndarray  # group index (spec order) of each output row
    draw_part: np.ndarray  # output shard number of each output row
    n_parts: int
    notes: list[str] = field(default_factory=list)

    @property
    def realised_tokens(self) -> int:
        return sum(g.realised_tokens for g in self.groups)


@dataclass
class MixPlan:
    spec: MixSpec
    shards: list[PoolShard]
    frame: pl.DataFrame  # annotations: _shard, _row, n_tokens, source, predicate/quality columns
    group_of_doc: np.ndarray
    phases: list[PhasePlan]

    @property
    def notes(self) -> list[str]:
        return [n for p in self.phases for n in p.notes]

    def files(self) -> list[tuple[str, int]]:
        """(phase, part) of every output file, in manifest order."""
        return [(p.name, part) for p in self.phases for part in range(p.n_parts)]


# ----------------------------------------------------------------------------- shares


def phase_shares(spec: MixSpec, phase: PhaseSpec, available: dict[str, int]) -> dict[str, float]:
    """Target share of each group in the phase (normalised weights, or temperature sampling)."""
    weights = spec.phase_weights(phase)
    if phase.temperature is not None:
        total = sum(available[g] for g in weights) or 1
        raw = {g: (1.0 if w is None else w) * (available[g] / total) ** (1.0 / phase.temperature) if available[g] else 0.0
               for g, w in weights.items()}
    else:
        raw = {g: float(w) for g, w in weights.items()}
    norm = sum(raw.values())
    if norm <= 0:
        raise PlanError(f"phase {phase.name!r}: every group is empty or has zero weight")
    return {g: v / norm for g, v in raw.items()}


def redistribute(shares: dict[str, float], caps: dict[str, int], budget: int, on_short: str, phase: str,
                 available: dict[str, int], max_epochs: dict[str, float]) -> tuple[dict[str, float], set[str], list[str]]:
    """Target tokens per group after dealing with short groups; (targets, short groups, notes)."""
    targets = {g: s * budget for g, s in shares.items()}
    capped: set[str] = set()
    notes: list[str] = []
    while True:
        over = [g for g in targets if g not in capped and targets[g] > caps[g] + 1e-9]  # spec order
        if not over:
            break
        if on_short == "fail":
            g = over[0]
            raise ShortGroupError(
                f"phase {phase!r}: group {g!r} is short: its target is {targets[g]:,.0f} tokens ({shares[g]:.2%} of {budget:,}) "
                f"but it has {available[g]:,} tokens and max_epochs={max_epochs[g]:g} caps it at {caps[g]:,} "
                f"(raise max_epochs, lower its weight or the budget, or set on_short: redistribute)")
        for g in over:
            notes.append(f"phase {phase!r}: group {g!r} is short ({caps[g]:,} tokens at max_epochs={max_epochs[g]:g} "
                         f"< target {targets[g]:,.0f}); its shortfall was redistributed over the other groups")
            targets[g] = float(caps[g])
            capped.add(g)
        free = [g for g in targets if g not in capped and shares[g] > 0]
        deficit = budget - sum(targets.values())
        if not free:
            notes.append(f"phase {phase!r}: every group is at its cap; the phase has {sum(targets.values()):,.0f} of the "
                         f"{budget:,} tokens asked for")
            break
        norm = sum(shares[g] for g in free)
        for g in free:
            targets[g] += deficit * shares[g] / norm
    return targets, capped, notes


# ----------------------------------------------------------------------------- one group


def repeats_for(group: GroupSpec, frame: pl.DataFrame, idx: np.ndarray) -> np.ndarray:
    if group.sampling.method != "rehydrate":
        return np.ones(len(idx), np.int64)
    dup = frame.get_column(group.sampling.dup_column).fill_null(1).cast(pl.Int64).to_numpy()[idx]
    mins = np.array([r.min_dup for r in group.sampling.repeats], np.int64)
    times = np.array([r.times for r in group.sampling.repeats], np.int64)
    return times[np.clip(np.searchsorted(mins, np.maximum(dup, 1), side="right") - 1, 0, None)]


def quality_weights(group: GroupSpec, frame: pl.DataFrame, idx: np.ndarray) -> np.ndarray:
    q = frame.get_column(group.sampling.column).cast(pl.Float64).to_numpy()[idx]
    if np.isnan(q).all():
        return np.ones(len(idx))
    q = np.where(np.isnan(q), np.nanmin(q), q)
    t = group.sampling.temperature
    if group.sampling.weighting == "power":
        return np.power(np.clip(q, 0, None), 1.0 / t)
    return np.exp((q - q.max()) / t)


def partial_pass_order(group: GroupSpec, frame: pl.DataFrame, idx: np.ndarray, copy_doc: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Positions into `copy_doc` in the order the partial pass takes them."""
    if group.sampling.method == "quality":
        w = quality_weights(group, frame, idx)[copy_doc]
        u = rng.random(len(copy_doc))
        with np.errstate(divide="ignore"):
            keys = np.where(w > 0, np.log1p(-u) / np.where(w > 0, w, 1), -np.inf)  # log(u')/w, u' in (0, 1]
        return np.argsort(-keys, kind="stable")
    return rng.permutation(len(copy_doc))


def take_tokens(order_tokens: np.ndarray, remainder: int, max_fill: int = 64) -> np.ndarray:
    """Positions (into the order) to take so their tokens add up to `remainder`, from below:
    the longest prefix that fits, then the next ones in order that still fit the gap."""
    cum = np.cumsum(order_tokens)
    p = int(np.searchsorted(cum, remainder, side="right"))
    taken = [np.arange(p)]
    gap = remainder - (int(cum[p - 1]) if p else 0)
    start = p
    for _ in range(max_fill):
        if gap <= 0 or start >= len(order_tokens):
            break
        fits = np.flatnonzero(order_tokens[start:] <= gap)
        if not len(fits):
            break
        j = start + int(fits[0])
        taken.append(np.array([j]))
        gap -= int(order_tokens[j])
        start = j + 1
    return np.concatenate(taken)


def draw_group(group: GroupSpec, frame: pl.DataFrame, idx: np.ndarray, tok: np.ndarray, reps: np.ndarray,
               target: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each document of the group (positions of `idx`) is taken."""
    pass_tokens = int((tok * reps).sum())
    counts = np.zeros(len(idx), np.int64)
    if target <= 0 or pass_tokens == 0:
        return counts
    full = target // pass_tokens
    counts += full * reps
    remainder = target - full * pass_tokens
    if remainder > 0:
        copy_doc = np.arange(len(idx)) if (reps == 1).all() else np.repeat(np.arange(len(idx)), reps)
        order = partial_pass_order(group, frame, idx, copy_doc, rng)
        chosen = order[take_tokens(tok[copy_doc[order]], remainder)]
        counts += np.bincount(copy_doc[chosen], minlength=len(idx))
    return counts


# ----------------------------------------------------------------------------- the plan


def plan_mixture(spec: MixSpec, shards: list[PoolShard], frame: pl.DataFrame) -> MixPlan:
    group_of_doc = assign_groups(spec, frame)
    n_tokens = frame.get_column(N_TOKENS).to_numpy().astype(np.int64)
    members = {g.name: np.flatnonzero(group_of_doc == i) for i, g in enumerate(spec.groups)}
    available = {name: int(n_tokens[idx].sum()) for name, idx in members.items()}
    phases = [_plan_phase(spec, phase, frame, n_tokens, members, available) for phase in spec.effective_phases()]
    return MixPlan(spec, list(shards), frame, group_of_doc, phases)


def _plan_phase(spec: MixSpec, phase: PhaseSpec, frame: pl.DataFrame, n_tokens: np.ndarray,
                members: dict[str, np.ndarray], available: dict[str, int]) -> PhasePlan:
    shares = phase_shares(spec, phase, available)
    in_phase = list(shares)
    budget = phase.budget_tokens if phase.budget_tokens is not None else int(phase.budget_fraction * sum(available[g] for g in in_phase))
    if budget <= 0:
        raise PlanError(f"phase {phase.name!r}: its groups have no tokens (budget_fraction of an empty pool)")
    reps = {g: repeats_for(spec.group(g), frame, members[g]) for g in in_phase}
    pass_tokens = {g: int((n_tokens[members[g]] * reps[g]).sum()) for g in in_phase}
    caps = {g: int(math.floor(spec.group(g).max_epochs * pass_tokens[g])) for g in in_phase}
    targets, short, notes = redistribute(shares, caps, budget, spec.on_short, phase.name, available,
                                         {g: spec.group(g).max_epochs for g in in_phase})

    draws, draw_groups, plans = [], [], []
    group_index = {g.name: i for i, g in enumerate(spec.groups)}
    for g in in_phase:
        gs, idx = spec.group(g), members[g]
        target = int(round(targets[g]))
        counts = draw_group(gs, frame, idx, n_tokens[idx], reps[g], target, rng_for(spec.seed, "draw", phase.name, g))
        plan = GroupPlan(phase=phase.name, name=g, sampling=gs.sampling.method, max_epochs=gs.max_epochs,
                         requested_share=shares[g], target_share=targets[g] / budget, target_tokens=target,
                         available_docs=len(idx), available_tokens=available[g], pass_tokens=pass_tokens[g],
                         cap_tokens=caps[g], realised_tokens=int((counts * n_tokens[idx]).sum()),
                         realised_docs=int(counts.sum()), unique_docs=int((counts > 0).sum()),
                         max_doc_repeats=int(counts.max()) if len(counts) else 0, short=g in short)
        plans.append(plan)
        draws.append(np.repeat(idx, counts))
        draw_groups.append(np.full(int(counts.sum()), group_index[g], np.int16))

    total = sum(p.realised_tokens for p in plans)
    planned_total = sum(p.target_tokens for p in plans) or 1
    for p in plans:
        p.realised_share = p.realised_tokens / total if total else 0.0
        p.target_share = p.target_tokens / planned_total
        gap_pp = abs(p.realised_share - p.target_share) * 100
        if gap_pp > spec.tolerance_pp:
            idx = members[p.name]
            biggest = int(n_tokens[idx].max()) if len(idx) else 0
            p.notes.append(f"realised share {p.realised_share:.2%} is {gap_pp:.2f} pp from its target {p.target_share:.2%}: "
                           f"the group's documents are too long for the budget (largest {biggest:,} tokens vs a target of "
                           f"{p.target_tokens:,})")
            notes.append(f"phase {phase.name!r}, group {p.name!r}: {p.notes[-1]}")

    order = np.concatenate(draws) if draws else np.zeros(0, np.int64)
    groups_of_draw = np.concatenate(draw_groups) if draw_groups else np.zeros(0, np.int16)
    perm = rng_for(spec.seed, "shuffle", phase.name).permutation(len(order))
    order, groups_of_draw = order[perm], groups_of_draw[perm]
    tok = n_tokens[order]
    starts = np.cumsum(tok) - tok
    part = (starts // spec.output.shard_tokens).astype(np.int64)
    n_parts = int(part.max()) + 1 if len(part) else 0
    return PhasePlan(phase.name, budget, plans, order, groups_of_draw, part, n_parts, notes)


# ----------------------------------------------------------------------------- work for the writers


def jobs_by_pool_shard(plan: MixPlan) -> dict[int, dict[str, np.ndarray]]:
    """For each pool shard: which of its rows go where (output file, position), in row order."""
    files = {key: i for i, key in enumerate(plan.files())}
    shard_col = plan.frame.get_column(SHARD_COL).to_numpy()
    row_col = plan.frame.get_column(ROW_COL).to_numpy()
    n_tokens = plan.frame.get_column(N_TOKENS).to_numpy()
    parts = []
    for phase in plan.phases:
        file_index = np.array([files[(phase.name, p)] for p in range(phase.n_parts)], np.int32)
        parts.append(dict(doc=phase.draws, file=file_index[phase.draw_part] if phase.n_parts else np.zeros(0, np.int32),
                          pos=np.arange(len(phase.draws), dtype=np.int64), group=phase.draw_group))
    doc = np.concatenate([p["doc"] for p in parts]).astype(np.int64)
    cols = {k: np.concatenate([p[k] for p in parts]) for k in ("file", "pos", "group")}
    shard = shard_col[doc]
    order = np.lexsort((row_col[doc], shard))
    doc, shard = doc[order], shard[order]
    cols = {k: v[order] for k, v in cols.items()}
    bounds = np.searchsorted(shard, np.arange(len(plan.shards) + 1))
    out = {}
    for s in range(len(plan.shards)):
        lo, hi = bounds[s], bounds[s + 1]
        if lo == hi:
            continue
        out[s] = {"row": row_col[doc[lo:hi]].astype(np.int64), "n_tokens": n_tokens[doc[lo:hi]].astype(np.int64),
                  **{k: v[lo:hi] for k, v in cols.items()}}
    return out
