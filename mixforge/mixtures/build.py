"""Building a mixture version: count tokens -> plan -> draw and write -> data card -> commit.

Each step is a plain function; the per-shard work (token counting, planning aggregates, scatter,
gather) runs on an injected `mixforge.executor.Executor`: the Prefect tasks hand in a RayExecutor,
tests and benchmarks run it in-process (SerialExecutor, the default). The driver only ever
receives per-shard aggregates, never pool rows. The commit is versions.commit, which takedowns
share. `dry_run` stops after the plan and writes nothing (`mix --dry-run`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from typing import Any

from mixforge import __version__, storage
from mixforge.executor import Executor, SerialExecutor
from mixforge.mixtures import shard_steps as W
from mixforge.mixtures import tokens
from mixforge.mixtures.exclusions import with_standing_takedowns
from mixforge.mixtures.plan import MixPlan, plan_mixture
from mixforge.mixtures.pool import PoolShard, output_schema, resolve_pool
from mixforge.mixtures.preflight import check_spec
from mixforge.mixtures.spec import MixSpec, absolute_path
from mixforge.mixtures.versions import (
    MANIFEST_FORMAT,
    MixtureLayout,
    commit,
    list_versions,
    now,
    summary,
)
from mixforge.mixtures.write import MAX_BUCKETS, GatherJob, files_per_bucket, gather, remove_scratch
from mixforge.names import parse_version, version_label
from mixforge.runs import sha256_json
from mixforge.shards import read_parquet

log = logging.getLogger("mixforge")

__all__ = ["count_tokens", "write_data", "manifest_body", "build_mixture", "dry_run", "spec_for_pool"]


# ----------------------------------------------------------------------------- steps


def count_tokens(
    spec: MixSpec, shards: Sequence[PoolShard], executor: Executor | None = None, scratch: str | None = None
) -> list[str]:
    """Count tokens of every pool document into per-shard sidecars (cached); their URIs. With
    `scratch` (a local folder), counts not cached yet go there instead of beside the pool."""
    executor = executor or SerialExecutor()
    calls = [
        (
            s.uri,
            spec.tokenizer,
            spec.storage_options,
            {"rows": s.rows, "sha256": s.sha256},
            None if scratch is None else os.path.join(scratch, f"{s.index:06d}.parquet"),
        )
        for s in shards
    ]
    results = executor.map(tokens.count_shard, calls, step="mix-count-tokens", storage_options=spec.storage_options)
    fresh = sum(not r["cached"] for r in results)
    log.info("token counts: %d pool shards (%d counted now, %d cached)", len(results), fresh, len(results) - fresh)
    return [r["sidecar"] for r in results]


def data_key(spec: MixSpec, shards: Sequence[PoolShard]) -> str:
    """Names the data prefix: everything that determines the bytes of the data files."""
    return sha256_json(
        {
            "spec": spec.spec_hash(),
            "pool": [[s.uri, s.sha256] for s in shards],
            "code": __version__,
            "format": MANIFEST_FORMAT,
        }
    )[:20]


def _merge_scatter(acc: dict | None, r: dict) -> dict:
    acc = acc or {"buckets": {}, "stats": {}, "rows": 0}
    acc["rows"] += r["rows"]
    for b in r["buckets"]:
        acc["buckets"].setdefault(b, []).append(r["shard"])
    for key, st in r["stats"].items():
        a = acc["stats"].setdefault(key, {"tokens": 0, "docs": 0, "unique_docs": 0, "max_doc_repeats": 0})
        for k in ("tokens", "docs", "unique_docs"):
            a[k] += st[k]
        a["max_doc_repeats"] = max(a["max_doc_repeats"], st["max_doc_repeats"])
    return acc


def write_data(
    plan: MixPlan, executor: Executor | None = None, build_id: str | None = None, max_buckets: int = MAX_BUCKETS
) -> list[dict[str, Any]]:
    """Draw the planned rows from the pool and write the output shards; their manifest entries.
    Also sets each group plan's unique_docs and max_doc_repeats from the draw."""
    executor = executor or SerialExecutor()
    spec = plan.spec
    opts = spec.storage_options
    layout = MixtureLayout(spec.store, spec.name)
    prefix = layout.data_prefix(data_key(spec, plan.shards))
    scratch = layout.scratch(build_id or uuid.uuid4().hex)
    files = plan.files()
    uris = [storage.join(prefix, phase, f"part-{part:05d}.parquet") for phase, part in files]
    schema = output_schema(plan.shards)
    per_bucket = files_per_bucket(len(files), max_buckets)
    phases, offset = [], 0
    for p in plan.phases:
        phases.append({"name": p.name, "file_offset": offset, "n_files": p.n_files, "selections": p.selections})
        offset += p.n_files
    jobs = [W.DrawJob(ref, plan.view, tuple(phases), per_bucket, schema, scratch) for ref in plan.refs]
    try:
        drawn = executor.map(
            W.scatter, [(job, opts) for job in jobs], step="mix-draw", fold=_merge_scatter, storage_options=opts
        ) or {"buckets": {}, "stats": {}, "rows": 0}
        gathers = []
        for b in range(-(-len(files) // per_bucket)):
            members = tuple((i, uris[i]) for i in range(b * per_bucket, min((b + 1) * per_bucket, len(files))))
            pieces = tuple(W.piece_uri(scratch, b, s) for s in sorted(drawn["buckets"].get(b, [])))
            gathers.append(GatherJob(b, members, pieces, schema, spec.output.row_group_rows))
        written = executor.map(gather, [(job, opts) for job in gathers], step="mix-write", storage_options=opts)
        gathered = [e for entries in written for e in entries]
    finally:
        remove_scratch(scratch, opts)
    gathered.sort(key=lambda e: e["file_index"])
    group_index = {g.name: gi for gi, g in enumerate(spec.groups)}
    for p in plan.phases:
        for g in p.groups:
            st = drawn["stats"].get(
                f"{p.name}/{group_index[g.name]}", {"tokens": 0, "docs": 0, "unique_docs": 0, "max_doc_repeats": 0}
            )
            if (st["tokens"], st["docs"]) != (g.realised_tokens, g.realised_docs):  # the plan and the draw must agree
                raise RuntimeError(
                    f"phase {p.name!r}, group {g.name!r}: drew {st['tokens']:,} tokens in {st['docs']:,} rows "
                    f"but planned {g.realised_tokens:,} in {g.realised_docs:,}"
                )
            g.unique_docs, g.max_doc_repeats = st["unique_docs"], st["max_doc_repeats"]
    return [
        {
            "uri": e["uri"],
            "phase": phase,
            "part": part,
            "rows": e["rows"],
            "tokens": e["tokens"],
            "bytes": e["bytes"],
            "sha256": e["sha256"],
        }
        for (phase, part), e in zip(files, gathered)
    ]


def manifest_body(
    plan: MixPlan, files: list[dict[str, Any]], started: str, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything in the manifest except `version`, the commit time and the data card. `provenance`:
    where the spec came from (e.g. `{"optimization": {...}}`, the run that chose its weights)."""
    spec = plan.spec
    phases = []
    for p in plan.phases:
        phase_files = [i for i, f in enumerate(files) if f["phase"] == p.name]
        phases.append(
            {
                "name": p.name,
                "budget_tokens": p.budget_tokens,
                "realised_tokens": p.realised_tokens,
                "docs": sum(g.realised_docs for g in p.groups),
                "files": phase_files,
                "groups": [g.as_dict() for g in p.groups],
                "notes": p.notes,
            }
        )
    return {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "spec": spec.fingerprint(),
        "spec_hash": spec.spec_hash(),
        "seed": spec.seed,
        "code_version": __version__,
        "data_key": data_key(spec, plan.shards),
        "tokenizer": {
            "kind": spec.tokenizer.kind,
            "name": spec.tokenizer.name,
            "cache_key": tokens.tokenizer_key(spec.tokenizer, spec.storage_options),
        },
        "pool": {
            "inputs": list(spec.pool),
            "run_ids": sorted({s.run_id for s in plan.shards if s.run_id}),
            "shards": [s.manifest_entry() for s in plan.shards],
            "docs": plan.pool_docs,
            "tokens": plan.pool_tokens,
        },
        "phases": phases,
        "files": files,
        "notes": plan.notes,
        "derived_from": None,
        "takedown": None,
        "timestamps": {"started": started},
    } | ({"provenance": provenance} if provenance else {})


# ----------------------------------------------------------------------------- all in one


def build_mixture(
    spec: MixSpec,
    executor: Executor | None = None,
    provenance: dict[str, Any] | None = None,
    card_plots: bool = True,
) -> dict[str, Any]:
    """Build a new version of `spec`'s mixture; returns the `mix` summary (plus timings). `provenance`
    goes into the manifest as it is (and the data card says it: see card.markdown); `card_plots=False`
    leaves the card's plots out (an optimisation's proxy samples)."""
    executor = executor or SerialExecutor()
    started, t0 = now(), time.perf_counter()
    for warning in check_spec(spec):  # as the flow does: what metadata can tell fails here, before any work
        log.warning(warning)
    spec = with_standing_takedowns(spec)
    shards = resolve_pool(spec.pool, spec.storage_options)
    sidecars = count_tokens(spec, shards, executor)
    t1 = time.perf_counter()
    mix_plan = plan_mixture(spec, shards, sidecars, executor)
    t2 = time.perf_counter()
    files = write_data(mix_plan, executor)
    t3 = time.perf_counter()
    version, manifest = commit(
        spec.store, spec.name, manifest_body(mix_plan, files, started, provenance), spec.storage_options, card_plots
    )
    out = summary(manifest, spec.store)
    out["seconds"] = {
        "tokens": round(t1 - t0, 3),
        "plan": round(t2 - t1, 3),
        "write": round(t3 - t2, 3),
        "commit": round(time.perf_counter() - t3, 3),
    }
    return out


def plan_summary(mix_plan: MixPlan) -> dict[str, Any]:
    """What a plan will draw, per phase and group (the `mix --dry-run` output, less what only a
    dry run knows): shares requested and effective, what is available, what will be drawn."""
    groups, phases = [], []
    for p in mix_plan.phases:
        phases.append(
            {"name": p.name, "budget_tokens": p.budget_tokens, "tokens": p.realised_tokens, "files": p.n_files}
        )
        for g in p.groups:
            groups.append(
                {
                    "phase": p.name,
                    "name": g.name,
                    "sampling": g.sampling,
                    "requested_share": round(g.requested_share, 6),
                    "target_share": round(g.target_share, 6),
                    "available_docs": g.available_docs,
                    "available_tokens": g.available_tokens,
                    "target_tokens": g.target_tokens,
                    "tokens": g.realised_tokens,
                    "docs": g.realised_docs,
                    "full_passes": g.full_passes,
                    "epochs": round(g.epochs, 4),
                    "max_epochs": g.max_epochs,
                    "short": g.short,
                }
            )
    return {
        "name": mix_plan.spec.name,
        "pool": {"shards": len(mix_plan.shards), "docs": mix_plan.pool_docs, "tokens": mix_plan.pool_tokens},
        "phases": phases,
        "groups": groups,
        "tokens": sum(p.realised_tokens for p in mix_plan.phases),
        "docs": sum(g.realised_docs for p in mix_plan.phases for g in p.groups),
        "files": sum(p.n_files for p in mix_plan.phases),
        "notes": mix_plan.notes,
    }


def dry_run(spec: MixSpec, executor: Executor | None = None) -> dict[str, Any]:
    """The plan of a build of `spec`, exactly as `build_mixture` would draw it (same checks, same
    per-group tokens and rows), writing nothing: token counts the pool has no sidecar for yet are
    counted into a temporary local folder, removed on return."""
    started = time.perf_counter()
    warnings = check_spec(spec)
    spec = with_standing_takedowns(spec)
    shards = resolve_pool(spec.pool, spec.storage_options)
    with tempfile.TemporaryDirectory(prefix="mixforge-dry-run-") as scratch:
        sidecars = count_tokens(spec, shards, executor, scratch=scratch)
        counted = sum(s.startswith(scratch) for s in sidecars)
        mix_plan = plan_mixture(spec, shards, sidecars, executor)
    versions = list_versions(MixtureLayout(spec.store, spec.name), spec.storage_options)
    out = plan_summary(mix_plan)
    out["notes"] = warnings + out["notes"]
    out["pool"]["shards_counted_now"] = counted  # no cached token counts: counted in memory, not kept
    return {
        "dry_run": True,
        **out,
        "store": spec.store,
        "next_version": version_label(parse_version(versions[-1]) + 1 if versions else 1),
        "seconds": round(time.perf_counter() - started, 3),
    }


# ----------------------------------------------------------------------------- specs made in code


def _slug(value: Any) -> str:
    import re

    from mixforge.names import MAX_NAME_CHARS

    slug = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    return slug[: MAX_NAME_CHARS - 4].strip("-") or "none"  # room for a "-N" suffix within the name limit


def spec_for_pool(
    pool: str | Sequence[str],
    store: str,
    name: str = "default",
    *,
    group_by: str = "source",
    budget_fraction: float | None = 0.5,
    budget_tokens: int | None = None,
    temperature: float = 1.0,
    max_epochs: float = 1.0,
    seed: int = 0,
    licenses: dict[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> MixSpec:
    """A spec with one group per distinct value of `group_by` in the pool, shares by temperature
    sampling over their natural token shares (T=1: as in the pool), and a budget given as
    tokens or as a fraction of the pool. Reads only the `group_by` column."""
    import pyarrow.compute as pc

    # paths given in code are the process's own: resolved against its working directory here, once
    # (a build refuses relative paths, which would mean another folder on another worker)
    patterns = [absolute_path(p, os.getcwd()) for p in ([pool] if isinstance(pool, str) else pool)]
    store = absolute_path(store, os.getcwd())
    values: set[Any] = set()
    for shard in resolve_pool(patterns, storage_options):
        if group_by not in shard.schema.names:
            raise ValueError(f"pool shard {shard.uri} has no column {group_by!r} to group by")
        values.update(pc.unique(read_parquet(shard.uri, storage_options, columns=[group_by]).column(0)).to_pylist())
    groups, seen = [], set()
    for value in sorted(v for v in values if v is not None):
        slug, i = _slug(value), 2
        while slug in seen:
            slug, i = f"{_slug(value)}-{i}", i + 1
        seen.add(slug)
        groups.append({"name": slug, "where": {group_by: value}, "max_epochs": max_epochs})
    if not groups:
        raise ValueError(f"the pool has no non-null values of {group_by!r}")
    if budget_tokens is not None:
        budget_fraction = None
    data = {
        "name": name,
        "pool": patterns,
        "store": store,
        "seed": seed,
        "groups": groups,
        "temperature": temperature,
        "budget_tokens": budget_tokens,
        "budget_fraction": budget_fraction,
        "licenses": licenses or {},
        "storage": {"options": storage_options or {}},
        **overrides,
    }
    return MixSpec.model_validate(data)
