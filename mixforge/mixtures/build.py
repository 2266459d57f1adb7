"""Building a mixture version: count tokens -> plan -> draw and write -> commit -> data card.

Each step is a plain function; the per-shard work (token counting, scatter, gather) goes through a
`map_fn(fn, [args, ...]) -> [result, ...]` so the Prefect tasks can fan it out on Ray while tests
and benchmarks run it in-process.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mixforge import __version__, storage
from mixforge.mixtures import card, tokens
from mixforge.mixtures.plan import MixPlan, jobs_by_pool_shard, plan_mixture
from mixforge.mixtures.pool import PoolShard, load_annotations, output_schema, resolve_pool
from mixforge.mixtures.spec import MixSpec, sha256_json
from mixforge.mixtures.versions import MANIFEST_FORMAT, MixtureLayout, commit_version, summary
from mixforge.mixtures.write import ScatterJob, gather, gather_jobs, remove_scratch, scatter

log = logging.getLogger("mixforge")
MapFn = Callable[[Callable, Sequence[tuple]], list]


def serial_map(fn: Callable, calls: Sequence[tuple]) -> list:
    return [fn(*args) for args in calls]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- steps


def count_tokens(spec: MixSpec, shards: Sequence[PoolShard], map_fn: MapFn = serial_map) -> list[np.ndarray]:
    """Token counts of every pool document, per shard (from the sidecar cache where present)."""
    calls = [(s.uri, spec.tokenizer, spec.storage_options, {"rows": s.rows, "sha256": s.sha256}) for s in shards]
    results = map_fn(count_shard_counts, calls)
    fresh = sum(not r["cached"] for r in results)
    log.info("token counts: %d pool shards (%d counted now, %d cached)", len(results), fresh, len(results) - fresh)
    return [r["counts"] for r in results]


def count_shard_counts(uri: str, spec, storage_options, fingerprint) -> dict[str, Any]:
    result = tokens.count_shard(uri, spec, storage_options, fingerprint)
    counts = tokens.read_sidecar(result["sidecar"], fingerprint["sha256"], fingerprint["rows"], storage_options)
    return {**result, "counts": counts}


def plan(spec: MixSpec, shards: Sequence[PoolShard], counts: Sequence[np.ndarray]) -> MixPlan:
    return plan_mixture(spec, list(shards), load_annotations(spec, shards, counts))


def data_key(spec: MixSpec, shards: Sequence[PoolShard]) -> str:
    """Names the data prefix: everything that determines the bytes of the data files."""
    return sha256_json({"spec": spec.spec_hash(), "pool": [[s.uri, s.sha256] for s in shards],
                        "code": __version__, "format": MANIFEST_FORMAT})[:20]


def write_data(plan: MixPlan, map_fn: MapFn = serial_map, build_id: str | None = None) -> list[dict[str, Any]]:
    """Draw the planned rows from the pool and write the output shards; their manifest entries."""
    spec = plan.spec
    layout = MixtureLayout(spec.store, spec.name)
    prefix = layout.data_prefix(data_key(spec, plan.shards))
    scratch = layout.scratch(build_id or uuid.uuid4().hex)
    files = plan.files()
    uris = [storage.join(prefix, phase, f"part-{part:05d}.parquet") for phase, part in files]
    schema = output_schema(plan.shards)
    names = tuple(g.name for g in spec.groups)
    jobs = [ScatterJob(s, plan.shards[s].uri, j["row"], j["n_tokens"], j["file"], j["pos"], j["group"], names, schema, scratch)
            for s, j in sorted(jobs_by_pool_shard(plan).items())]
    try:
        scattered = map_fn(scatter, [(job, spec.storage_options) for job in jobs])
        gathered = map_fn(gather, [(job, spec.storage_options) for job in gather_jobs(uris, scattered, schema, spec.output.row_group_rows)])
    finally:
        remove_scratch(scratch, spec.storage_options)
    gathered.sort(key=lambda e: e["file_index"])
    return [{"uri": e["uri"], "phase": phase, "part": part, "rows": e["rows"], "tokens": e["tokens"],
             "bytes": e["bytes"], "sha256": e["sha256"]} for (phase, part), e in zip(files, gathered)]


def manifest_body(plan: MixPlan, files: list[dict[str, Any]], started: str) -> dict[str, Any]:
    """Everything in the manifest except `version` and the commit time."""
    spec = plan.spec
    phases = []
    for p in plan.phases:
        phase_files = [i for i, f in enumerate(files) if f["phase"] == p.name]
        phases.append({"name": p.name, "budget_tokens": p.budget_tokens, "realised_tokens": p.realised_tokens,
                       "docs": sum(g.realised_docs for g in p.groups), "files": phase_files,
                       "groups": [g.as_dict() for g in p.groups], "notes": p.notes})
    return {"format": MANIFEST_FORMAT, "name": spec.name, "spec": spec.fingerprint(), "spec_hash": spec.spec_hash(),
            "seed": spec.seed, "code_version": __version__, "data_key": data_key(spec, plan.shards),
            "tokenizer": {"kind": spec.tokenizer.kind, "name": spec.tokenizer.name, "cache_key": tokens.tokenizer_key(spec.tokenizer)},
            "pool": {"inputs": list(spec.pool), "run_ids": sorted({s.run_id for s in plan.shards if s.run_id}),
                     "shards": [s.manifest_entry() for s in plan.shards],
                     "docs": int(plan.frame.height), "tokens": int(plan.frame.get_column("n_tokens").sum())},
            "phases": phases, "files": files, "notes": plan.notes,
            "derived_from": None, "takedown": None, "timestamps": {"started": started}}


def commit(store: str, name: str, body: dict[str, Any], storage_options=None) -> tuple[str, dict[str, Any]]:
    """Allocate a version, commit its manifest create-only, then write the data card beside it."""
    layout = MixtureLayout(store, name)

    def make(version: str) -> dict[str, Any]:
        return {**body, "version": version, "timestamps": {**body["timestamps"], "committed": now()}}

    version, manifest = commit_version(layout, make, storage_options)
    card.write_card(manifest, layout.version_dir(version), storage_options)
    return version, manifest


# ----------------------------------------------------------------------------- all in one


def build_mixture(spec: MixSpec, map_fn: MapFn = serial_map) -> dict[str, Any]:
    """Build a new version of `spec`'s mixture; returns the `mix` summary (plus timings)."""
    started, t0 = now(), time.perf_counter()
    shards = resolve_pool(spec.pool, spec.storage_options)
    counts = count_tokens(spec, shards, map_fn)
    t1 = time.perf_counter()
    mix_plan = plan(spec, shards, counts)
    t2 = time.perf_counter()
    files = write_data(mix_plan, map_fn)
    t3 = time.perf_counter()
    version, manifest = commit(spec.store, spec.name, manifest_body(mix_plan, files, started), spec.storage_options)
    out = summary(manifest, spec.store)
    out["seconds"] = {"tokens": round(t1 - t0, 3), "plan": round(t2 - t1, 3), "write": round(t3 - t2, 3),
                      "commit": round(time.perf_counter() - t3, 3)}
    return out


# ----------------------------------------------------------------------------- specs made in code


def _slug(value: Any) -> str:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", str(value).lower()).strip("-")
    return slug or "none"


def spec_for_pool(pool: str | Sequence[str], store: str, name: str = "default", *, group_by: str = "source",
                  budget_fraction: float | None = 0.5, budget_tokens: int | None = None, temperature: float = 1.0,
                  max_epochs: float = 1.0, seed: int = 0, licenses: dict[str, str] | None = None,
                  storage_options: dict[str, Any] | None = None, **overrides: Any) -> MixSpec:
    """A spec with one group per distinct value of `group_by` in the pool, shares by temperature
    sampling over their natural token shares (T=1: as in the pool), and a budget given as
    tokens or as a fraction of the pool. Reads only the `group_by` column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    patterns = [pool] if isinstance(pool, str) else list(pool)
    values: set[Any] = set()
    for shard in resolve_pool(patterns, storage_options):
        fs, path = storage.filesystem(shard.uri, storage_options)
        if group_by not in shard.schema.names:
            raise ValueError(f"pool shard {shard.uri} has no column {group_by!r} to group by")
        with fs.open(path, "rb") as f:
            values.update(pc.unique(pq.read_table(f, columns=[group_by]).column(0)).to_pylist())
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
    data = {"name": name, "pool": patterns, "store": store, "seed": seed, "groups": groups, "temperature": temperature,
            "budget_tokens": budget_tokens, "budget_fraction": budget_fraction, "licenses": licenses or {},
            "storage": {"options": storage_options or {}}, **overrides}
    return MixSpec.model_validate(data)
