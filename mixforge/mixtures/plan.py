"""Planning a mixture exactly, in tokens, without holding the pool in one process.

For each phase and group: target tokens = share x budget. A group is taken in full passes plus
one seeded partial pass. The partial pass orders the group's copies by seeded keys (its sampler,
samplers.py: uniform, Efraimidis-Spirakis for quality weighting, over rehydrated copies) and takes the longest
key-ordered prefix whose tokens fit the remainder, then fills the last gap greedily from the next
`FILL_WINDOW` copies in key order. So a group's realised tokens miss its target by less than one
document. A group whose cap (max_epochs x its tokens, per phase) is below its target is short: its
shortfall is redistributed over the other groups in proportion to their shares, or the build
fails, as the spec says.

Where the driver works from aggregates only (per-shard tasks send them):
1. shard stats: per group documents, tokens, tokens of a pass, what its sampler needs (a score range);
2. the threshold search: token histograms of the keys per group (`bins` bins), each round narrowing
   the key interval that holds the group's threshold, until the copies around it are few;
3. those copies themselves (key, tokens, shard, row, copy): the driver sorts them and sets the cut.
The driver holds O(groups x bins + copies near the thresholds), never a pool row. The search
settings (`SearchLimits`) change how much is fetched, not what is drawn. The per-shard work runs on
an injected `Executor` (in-process by default, Ray tasks in the flow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from mixforge import schema as S
from mixforge.config_errors import ConfigError
from mixforge.executor import Executor, SerialExecutor
from mixforge.mixtures import shard_steps as W
from mixforge.mixtures.pool import PoolError, PoolShard, predicate_columns
from mixforge.mixtures.spec import MixSpec, PhaseSpec, describe_where
from mixforge.schema import PARENT_ID

FILL_WINDOW = 128  # copies after a threshold tried as gap fillers: part of the draw (changing it changes data)


class ShortGroupError(ValueError):
    """A group cannot meet its target within its epoch cap and the spec says `on_short: fail`."""


class PlanError(ValueError):
    pass


class EmptyGroupError(PlanError, ConfigError):
    """A group matches no document of the pool and the spec does not say it may be empty. Found
    from the per-shard totals, before anything of the version is written; a ConfigError, since
    the spec (or the pool it names) is what has to change."""


@dataclass(frozen=True)
class SearchLimits:
    """How the threshold search talks to the shards; results do not depend on these."""

    bins: int = 256
    max_window: int = 4096  # copies fetched around one threshold (more: another histogram round)
    max_rounds: int = 40


def epochs_of(realised_tokens: int, available_tokens: int) -> float:
    """Passes over the group's tokens that the realised tokens make."""
    return realised_tokens / available_tokens if available_tokens else 0.0


def realised_shares(realised_tokens: Sequence[int]) -> tuple[int, list[float]]:
    """A phase's realised total and each group's share of it (shared by the planner and takedowns)."""
    total = sum(realised_tokens)
    return total, [t / total if total else 0.0 for t in realised_tokens]


@dataclass
class GroupPlan:
    phase: str
    name: str
    sampling: str
    max_epochs: float
    requested_share: float  # the spec's weights normalised over the phase (after temperature sampling)
    target_share: float  # effective: after empty (allowed) and short groups' shares went to the others
    target_tokens: int
    available_docs: int
    available_tokens: int
    pass_tokens: int  # tokens of one pass (rehydrated: counting repeats)
    cap_tokens: int
    full_passes: int = 0
    realised_tokens: int = 0
    realised_docs: int = 0  # rows written, repeats included
    unique_docs: int = 0  # set from the draw
    max_doc_repeats: int = 0  # set from the draw
    short: bool = False
    realised_share: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> float:
        return epochs_of(self.realised_tokens, self.available_tokens)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epochs"] = round(self.epochs, 6)
        return d


@dataclass
class PhasePlan:
    name: str
    budget_tokens: int
    groups: list[GroupPlan]
    selections: dict[int, dict]  # group index -> {full, cut, extras}: what each shard takes
    n_files: int
    notes: list[str] = field(default_factory=list)

    @property
    def realised_tokens(self) -> int:
        return sum(g.realised_tokens for g in self.groups)


@dataclass
class MixPlan:
    spec: MixSpec
    shards: list[PoolShard]
    refs: list[W.ShardRef]
    view: W.PoolView
    pool_docs: int
    pool_tokens: int
    phases: list[PhasePlan]

    @property
    def notes(self) -> list[str]:
        return [n for p in self.phases for n in p.notes]

    def files(self) -> list[tuple[str, int]]:
        """(phase, part) of every output file, in manifest order."""
        return [(p.name, part) for p in self.phases for part in range(p.n_files)]


# ----------------------------------------------------------------------------- shares


def phase_shares(
    spec: MixSpec, phase: PhaseSpec, available: dict[str, int], empty: frozenset[str] = frozenset()
) -> dict[str, float]:
    """Target share of each group in the phase (normalised weights, or temperature sampling); the
    groups in `empty` (empty, and allowed to be) get none, so the others share their weight."""
    weights = spec.phase_weights(phase)
    if phase.temperature is not None:
        total = sum(available[g] for g in weights) or 1
        raw = {
            g: (1.0 if w is None else w) * (available[g] / total) ** (1.0 / phase.temperature) if available[g] else 0.0
            for g, w in weights.items()
        }
    else:
        raw = {g: 0.0 if g in empty else float(w) for g, w in weights.items()}
    norm = sum(raw.values())
    if norm <= 0:
        raise PlanError(f"phase {phase.name!r}: every group is empty or has zero weight")
    return {g: v / norm for g, v in raw.items()}


def redistribute(
    shares: dict[str, float],
    caps: dict[str, int],
    budget: int,
    on_short: str,
    phase: str,
    available: dict[str, int],
    max_epochs: dict[str, float],
) -> tuple[dict[str, float], set[str], list[str]]:
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
                f"phase {phase!r}: group {g!r} is short: its target is "
                f"{targets[g]:,.0f} tokens ({shares[g]:.2%} of {budget:,}) "
                f"but it has {available[g]:,} tokens and max_epochs={max_epochs[g]:g} caps it at {caps[g]:,} "
                f"(raise max_epochs, lower its weight or the budget, or set on_short: redistribute)"
            )
        for g in over:
            notes.append(
                f"phase {phase!r}: group {g!r} is short ({caps[g]:,} tokens at max_epochs={max_epochs[g]:g} "
                f"< target {targets[g]:,.0f}); its shortfall was redistributed over the other groups"
            )
            targets[g] = float(caps[g])
            capped.add(g)
        free = [g for g in targets if g not in capped and shares[g] > 0]
        deficit = budget - sum(targets.values())
        if not free:
            notes.append(
                f"phase {phase!r}: every group is at its cap; the phase has {sum(targets.values()):,.0f} of the "
                f"{budget:,} tokens asked for"
            )
            break
        norm = sum(shares[g] for g in free)
        for g in free:
            targets[g] += deficit * shares[g] / norm
    return targets, capped, notes


# ----------------------------------------------------------------------------- pool-wide facts


def annotation_columns(spec: MixSpec, shards: Sequence[PoolShard]) -> tuple[str, ...]:
    available = set().union(*(s.schema.names for s in shards))
    wanted = predicate_columns(spec) | {S.SOURCE}
    missing = sorted(c for c in wanted if c not in available and c not in (PARENT_ID, S.URL))  # optional columns
    if missing:
        raise PoolError(f"the spec uses columns {missing} that no pool shard has (pool columns: {sorted(available)})")
    return tuple(sorted(wanted))


def why_empty(spec: MixSpec, gi: int, st: dict, stats: dict) -> str:
    """Why group `gi` has no tokens, from the per-shard totals (st: its merged stats)."""
    if st["docs"]:
        return f"has {st['docs']:,} documents but they hold no tokens"
    if not st["matched"]:
        return f"matches no document of the pool ({stats['shards']:,} shards, {stats['docs']:,} documents)"
    if not st["matched_kept"]:
        return (
            f"matches {st['matched']:,} documents of the pool, "
            "but every one is excluded (exclude, or an earlier takedown)"
        )
    earlier = [g.name for g in spec.groups[:gi]]
    return (
        f"matches {st['matched_kept']:,} documents of the pool, but every one belongs to an earlier group "
        f"({', '.join(map(repr, earlier))}): a document joins the first group it matches"
    )


def empty_groups(spec: MixSpec, stats: dict) -> tuple[frozenset[str], dict[str, str]]:
    """The groups with no tokens: (those allowed to be empty, {name: note}). EmptyGroupError, one
    line per group, when any is not allowed: checked right after the per-shard totals, so a build
    stops before it draws or writes anything."""
    errors, notes = [], {}
    for gi, g in enumerate(spec.groups):
        st = stats["groups"][gi]
        if st["tokens"] > 0:
            continue
        what = f"group {g.name!r} (groups[{gi}]: {describe_where(g.where)}) {why_empty(spec, gi, st, stats)}"
        if g.allow_empty:
            notes[g.name] = f"{what}; allowed (allow_empty: true), its weight went to the other groups"
        else:
            errors.append(
                f"{what}; no version was written (fix the predicates, or set allow_empty: true on the group "
                "if it may be empty)"
            )
    if errors:
        raise EmptyGroupError("\n".join(errors))
    return frozenset(notes), notes


def group_norms(spec: MixSpec, stats: dict) -> dict[str, Any]:
    """Group name -> the pool-wide facts its sampler's keys need (only groups whose sampler has any)."""
    norms = {}
    for gi, g in enumerate(spec.groups):
        norm = g.sampling.norm(stats["groups"][gi])
        if norm is not None:
            norms[g.name] = norm
    return norms


def key_bracket(spec: MixSpec, norms: Mapping[str, Any], gi: int, st: dict) -> tuple[float, float]:
    """An interval [lo, hi) holding every key of the group."""
    g = spec.groups[gi]
    return g.sampling.key_bracket(norms.get(g.name), st)


# ----------------------------------------------------------------------------- the plan


def plan_mixture(
    spec: MixSpec,
    shards: Sequence[PoolShard],
    sidecars: Sequence[str],
    executor: Executor | None = None,
    limits: SearchLimits = SearchLimits(),
) -> MixPlan:
    executor = executor or SerialExecutor()
    opts = spec.storage_options
    refs = [W.ShardRef(s.index, s.uri, s.rows, sc) for s, sc in zip(shards, sidecars)]
    columns = annotation_columns(spec, shards)
    stats = executor.map(
        W.shard_stats,
        [(W.PoolView(spec, columns), ref, opts) for ref in refs],
        step="mix-shard-stats",
        fold=partial(W.merge_stats, spec),
        storage_options=opts,
    )
    view = W.PoolView(spec, columns, group_norms(spec, stats))
    gstats = {g.name: stats["groups"][gi] for gi, g in enumerate(spec.groups)}
    available = {name: st["tokens"] for name, st in gstats.items()}
    group_index = {g.name: gi for gi, g in enumerate(spec.groups)}
    empty, empty_notes = empty_groups(spec, stats)

    phases, searches = [], {}
    for phase in spec.effective_phases():
        requested = phase_shares(spec, phase, available)
        shares = phase_shares(spec, phase, available, empty)
        in_phase = list(shares)
        budget = (
            phase.budget_tokens
            if phase.budget_tokens is not None
            else int(phase.budget_fraction * sum(available[g] for g in in_phase))
        )
        if budget <= 0:
            raise PlanError(f"phase {phase.name!r}: its groups have no tokens (budget_fraction of an empty pool)")
        caps = {g: int(math.floor(spec.group(g).max_epochs * gstats[g]["pass_tokens"])) for g in in_phase}
        targets, short, notes = redistribute(
            shares, caps, budget, spec.on_short, phase.name, available, {g: spec.group(g).max_epochs for g in in_phase}
        )
        plans, selections = [], {}
        for g in in_phase:
            gs, st, gi = spec.group(g), gstats[g], group_index[g]
            target = int(round(targets[g]))
            full = target // st["pass_tokens"] if st["pass_tokens"] and target > 0 else 0
            remainder = target - full * st["pass_tokens"] if st["pass_tokens"] else 0
            plan = GroupPlan(
                phase=phase.name,
                name=g,
                sampling=gs.sampling.method,
                max_epochs=gs.max_epochs,
                requested_share=requested[g],
                target_share=targets[g] / budget,
                target_tokens=target,
                available_docs=st["docs"],
                available_tokens=st["tokens"],
                pass_tokens=st["pass_tokens"],
                cap_tokens=caps[g],
                full_passes=full,
                realised_tokens=full * st["pass_tokens"],
                realised_docs=full * st["copies"],
                short=g in short,
            )
            plans.append(plan)
            selections[gi] = {"full": full, "cut": None, "extras": {}}
            if remainder > 0:
                lo, hi = key_bracket(spec, view.norms, gi, st)
                searches[f"{phase.name}/{gi}"] = {
                    "phase": phase.name,
                    "group": gi,
                    "remainder": remainder,
                    "lo": lo,
                    "hi": hi,
                    "plan": plan,
                    "selection": selections[gi],
                }
        notes = [f"phase {phase.name!r}: {empty_notes[g]}" for g in in_phase if g in empty_notes] + notes
        phases.append(PhasePlan(phase.name, budget, plans, selections, 0, notes))

    find_thresholds(view, refs, searches, executor, limits, opts)

    for phase in phases:
        total, shares = realised_shares([p.realised_tokens for p in phase.groups])
        planned_total = sum(p.target_tokens for p in phase.groups) or 1
        for p, realised_share in zip(phase.groups, shares):
            p.realised_share = realised_share
            p.target_share = p.target_tokens / planned_total
            gap_pp = abs(p.realised_share - p.target_share) * 100
            if gap_pp > spec.tolerance_pp:
                biggest = gstats[p.name]["max_tokens"]
                p.notes.append(
                    f"realised share {p.realised_share:.2%} is {gap_pp:.2f} pp from its target {p.target_share:.2%}: "
                    f"the group's documents are too long for the budget (largest {biggest:,} tokens vs a target of "
                    f"{p.target_tokens:,})"
                )
                phase.notes.append(f"phase {phase.name!r}, group {p.name!r}: {p.notes[-1]}")
        phase.n_files = -(-total // spec.output.shard_tokens) if total else 0
    return MixPlan(spec, list(shards), refs, view, stats["docs"], stats["tokens"], phases)


def _request(search_id: str, s: dict) -> dict:
    return {"id": search_id, "phase": s["phase"], "group": s["group"], "lo": s["lo"], "hi": s["hi"]}


def find_thresholds(
    view: W.PoolView,
    refs: Sequence[W.ShardRef],
    searches: dict[str, dict],
    executor: Executor,
    limits: SearchLimits,
    storage_options,
) -> None:
    """Set each search's selection (cut and gap fillers) and its plan's realised figures."""
    active, rounds = dict(searches), 0
    while active:
        rounds += 1
        requests = [_request(i, s) for i, s in active.items()]
        hist = executor.map(
            W.shard_histograms,
            [(view, ref, requests, limits.bins, storage_options) for ref in refs],
            step="mix-key-histograms",
            fold=W.merge_histograms,
            storage_options=storage_options,
        )
        ready = {}
        for i, s in active.items():
            h = hist[i]
            cum = h["below_tokens"] + np.cumsum(h["tokens"])
            j = int(
                np.searchsorted(cum, s["remainder"], side="right")
            )  # the bin of the copy that crosses the remainder
            if j >= limits.bins:
                raise PlanError(
                    f"internal: threshold of group {view.spec.groups[s['group']].name!r} not inside its key interval"
                )
            after = np.cumsum(h["copies"][j + 1 :])
            k = min(
                j + 1 + int(np.searchsorted(after, FILL_WINDOW)), limits.bins - 1
            )  # enough copies after it to fill the gap
            edges = W.bin_edges(s["lo"], s["hi"], limits.bins)
            lo, hi = float(edges[j]), float(edges[k + 1])
            window = int(h["copies"][j : k + 1].sum())
            if window <= limits.max_window or rounds >= limits.max_rounds or (lo, hi) == (s["lo"], s["hi"]):
                ready[i] = s
            s["lo"], s["hi"] = lo, hi
        for i in ready:
            del active[i]
        if ready:
            settle(view, refs, ready, executor, storage_options)


def merge_windows(acc: dict | None, w: dict) -> dict:
    """Fold of shard_window results: sums of the counts below, lists of the copies (sorted later)."""
    acc = acc or {}
    for i, v in w.items():
        a = acc.setdefault(i, {"below_tokens": 0, "below_copies": 0, "parts": []})
        a["below_tokens"] += v["below_tokens"]
        a["below_copies"] += v["below_copies"]
        a["parts"].append(v)
    return acc


def settle(
    view: W.PoolView, refs: Sequence[W.ShardRef], searches: dict[str, dict], executor: Executor, storage_options
) -> None:
    requests = [_request(i, s) for i, s in searches.items()]
    windows = executor.map(
        W.shard_window,
        [(view, ref, requests, storage_options) for ref in refs],
        step="mix-threshold-window",
        fold=merge_windows,
        storage_options=storage_options,
    )
    for i, s in searches.items():
        w = windows[i]
        parts = w["parts"]
        key = np.concatenate([p["key"] for p in parts])
        tok = np.concatenate([p["tokens"] for p in parts])
        row = np.concatenate([p["row"] for p in parts])
        cpy = np.concatenate([p["copy"] for p in parts])
        shard = np.concatenate([np.full(len(p["key"]), p["shard"], np.int64) for p in parts])
        order = np.lexsort((cpy, row, shard, key))  # the global order of the copies: key, then shard, row, copy
        key, tok, row, cpy, shard = key[order], tok[order], row[order], cpy[order], shard[order]
        cum = w["below_tokens"] + np.cumsum(tok)
        remainder = s["remainder"]
        p = int(np.searchsorted(cum, remainder, side="right"))  # copies [0, p) of the window fit
        gap = remainder - (int(cum[p - 1]) if p else w["below_tokens"])
        if p < len(key):
            cut = (float(key[p]), int(shard[p]), int(row[p]), int(cpy[p]))
        else:
            cut = (s["hi"], -1, -1, -1)
        extras: dict[int, list[tuple[int, int]]] = {}
        n_extra = 0
        for x in range(p + 1, min(p + 1 + FILL_WINDOW, len(key))):  # at most FILL_WINDOW copies: a short loop
            if gap <= 0:
                break
            if tok[x] <= gap:
                extras.setdefault(int(shard[x]), []).append((int(row[x]), int(cpy[x])))
                gap -= int(tok[x])
                n_extra += 1
        sel = s["selection"]
        sel["cut"] = cut
        sel["extras"] = {sh: np.array(v, np.int64).reshape(-1, 2) for sh, v in extras.items()}
        plan: GroupPlan = s["plan"]
        plan.realised_tokens += remainder - gap
        plan.realised_docs += w["below_copies"] + p + n_extra
