"""Prefect tasks of the mix flow: the per-shard work (token counts, planning aggregates, draw and write) on Ray; the plan itself, the commit and the artifacts in-process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import ray
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.config import RayConfig
from mixforge.names import artifact_key
from mixforge.mixtures import build as B
from mixforge.mixtures import takedown as TD
from mixforge.mixtures.card import ensure_card
from mixforge.mixtures.plan import MixPlan
from mixforge.mixtures.pool import PoolShard
from mixforge.mixtures.spec import MixSpec
from mixforge.mixtures.versions import MixtureLayout, read_manifest, summary as version_summary
from tasks.executor import ray_map


class MixStepFailed(RuntimeError):
    pass


_REMOTES: dict[Callable, Any] = {}


def ray_map_fn(ray_config: RayConfig) -> B.MapFn:
    """A `map_fn` for the library: each call a Ray task (bounded in flight, retried); results in
    call order, or folded as they arrive (`fold` is order-independent: sums, mins, sorted later),
    so the driver holds one aggregate rather than every shard's result."""
    def run(fn: Callable, calls: Sequence[tuple], fold: Callable | None = None) -> Any:
        if fn not in _REMOTES:
            _REMOTES[fn] = ray.remote(fn)
        remote = _REMOTES[fn]
        results: list[Any] = [None] * len(calls)
        acc = None
        errors = []
        for index, result, error in ray_map(remote, list(enumerate(calls)), ray_config):
            if error is not None:
                errors.append(f"  call {index}: {error}")
            elif fold is not None:
                acc = fold(acc, result)
            else:
                results[index] = result
        if errors:
            raise MixStepFailed(f"{fn.__name__}: {len(errors)} of {len(calls)} calls failed after retries:\n" + "\n".join(errors))
        return acc if fold is not None else results
    return run


@task(name="check-spec", cache_policy=NO_CACHE)
def check_spec(spec: MixSpec) -> list[str]:
    """Pre-flight: the spec against its pool's Parquet metadata, before any Ray work (a spec run
    from the UI or a deployment gets the check the CLI makes). PreflightError lists every problem;
    returns the warnings."""
    from mixforge.mixtures.preflight import check_spec as check

    return check(spec)


@task(name="standing-takedowns", cache_policy=NO_CACHE)
def standing_takedowns(spec: MixSpec) -> MixSpec:
    """The spec with the mixture's earlier takedowns excluded (they never come back)."""
    from mixforge.mixtures.takedown import with_standing_takedowns

    return with_standing_takedowns(spec)


@task(name="resolve-pool", cache_policy=NO_CACHE)
def resolve_pool(spec: MixSpec) -> list[PoolShard]:
    return B.resolve_pool(spec.pool, spec.storage_options)


@task(name="count-tokens", cache_policy=NO_CACHE)
def count_tokens(spec: MixSpec, shards: list[PoolShard]) -> list[str]:
    """Token-count sidecars of the pool shards (counted on Ray where not cached)."""
    return B.count_tokens(spec, shards, ray_map_fn(spec.ray))


@task(name="plan-mixture", cache_policy=NO_CACHE)
def plan_mixture(spec: MixSpec, shards: list[PoolShard], sidecars: list[str]) -> MixPlan:
    """Plan on aggregates: the per-shard work runs as Ray tasks, the driver sees no pool rows."""
    return B.plan(spec, shards, sidecars, ray_map_fn(spec.ray))


@task(name="write-mixture", cache_policy=NO_CACHE)
def write_mixture(plan: MixPlan) -> list[dict]:
    return B.write_data(plan, ray_map_fn(plan.spec.ray))


@task(name="commit-mixture", cache_policy=NO_CACHE)
def commit_mixture(plan: MixPlan, files: list[dict], started: str) -> dict:
    spec = plan.spec
    _, manifest = B.commit(spec.store, spec.name, B.manifest_body(plan, files, started), spec.storage_options)
    return manifest


@task(name="derive-mixture", cache_policy=NO_CACHE)
def derive_mixture(store: str, name: str, from_version: str | None, ids: list[str], url_patterns: list[str],
                   reason: str, storage_options: dict[str, Any]) -> dict:
    out = TD.derive_version(store, name, from_version, ids=ids, url_patterns=url_patterns, reason=reason,
                            storage_options=storage_options)
    return read_manifest(store, name, out["version"], storage_options)


def weight_rows(manifest: dict) -> list[dict]:
    return [{"version": manifest["version"], "phase": p["name"], "group": g["name"], "sampling": g["sampling"],
             "target_share": round(g["target_share"], 6), "realised_share": round(g["realised_share"], 6),
             "tokens": g["realised_tokens"], "docs": g["realised_docs"], "epochs": round(g["epochs"], 4),
             "short": g["short"]}
            for p in manifest["phases"] for g in p["groups"]]


def link_for(uri: str) -> str:
    return "file://" + os.path.abspath(uri) if "://" not in uri else uri


@task(name="publish-mixture-artifacts", cache_policy=NO_CACHE)
def publish_mixture_artifacts(manifest: dict, store: str, storage_options: dict[str, Any] | None = None) -> dict:
    """Table of realised weights, the data card and a link to the manifest, all keyed by the
    mixture's name: each version adds to the same artifact histories in the Prefect UI."""
    name, version = manifest["name"], manifest["version"]
    layout = MixtureLayout(store, name)
    create_table_artifact(key=artifact_key("mixture", name), table=weight_rows(manifest),
                          description=f"mixture {name} {version}: realised weights ({layout.manifest(version)})")
    card = ensure_card(store, name, version, storage_options)
    create_markdown_artifact(key=artifact_key("mixture", name, "card"), markdown=card, description=f"mixture {name} {version}: data card")
    create_link_artifact(key=artifact_key("mixture", name, "manifest"), link=link_for(layout.manifest(version)),
                         link_text=f"{name} {version} manifest.json", description=f"mixture {name} {version}: manifest")
    return version_summary(manifest, store)
