"""Prefect tasks of the mix flow: each takes the job's executor (`tasks.executor.executor_for`: Ray,
or the local pool for a small job) and calls the library (the per-shard work of token counts,
planning aggregates, draw and write, and takedowns runs there); the plan itself, the commit and
the artifacts run in-process."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.config import RayConfig
from mixforge.mixtures import build, pool, takedown
from mixforge.mixtures import plan as planner
from mixforge.mixtures.exclusions import with_standing_takedowns
from mixforge.mixtures.plan import MixPlan
from mixforge.mixtures.pool import PoolShard
from mixforge.mixtures.preflight import check_spec as check
from mixforge.mixtures.spec import MixSpec
from mixforge.mixtures.versions import MixtureLayout, commit, ensure_card
from mixforge.mixtures.versions import summary as version_summary
from mixforge.names import artifact_key
from tasks.executor import executor_for
from tasks.reporting import embed_images, location


@task(name="check-spec", cache_policy=NO_CACHE)
def check_spec(spec: MixSpec) -> list[str]:
    """Pre-flight: the spec against its pool's Parquet metadata, before any Ray work (a spec run
    from the UI or a deployment gets the check the CLI makes). PreflightError lists every problem;
    returns the warnings."""
    return check(spec)


@task(name="standing-takedowns", cache_policy=NO_CACHE)
def standing_takedowns(spec: MixSpec) -> MixSpec:
    """The spec with the mixture's earlier takedowns excluded (they never come back)."""
    return with_standing_takedowns(spec)


@task(name="resolve-pool", cache_policy=NO_CACHE)
def resolve_pool(spec: MixSpec) -> list[PoolShard]:
    return pool.resolve_pool(spec.pool, spec.storage_options)


@task(name="count-tokens", cache_policy=NO_CACHE)
def count_tokens(spec: MixSpec, shards: list[PoolShard]) -> list[str]:
    """Token-count sidecars of the pool shards (counted on Ray where not cached)."""
    return build.count_tokens(spec, shards, executor_for(spec.ray))


@task(name="plan-mixture", cache_policy=NO_CACHE)
def plan_mixture(spec: MixSpec, shards: list[PoolShard], sidecars: list[str]) -> MixPlan:
    """Plan on aggregates: the per-shard work runs as Ray tasks, the driver sees no pool rows."""
    return planner.plan_mixture(spec, shards, sidecars, executor_for(spec.ray))


@task(name="write-mixture", cache_policy=NO_CACHE)
def write_mixture(plan: MixPlan) -> list[dict]:
    return build.write_data(plan, executor_for(plan.spec.ray))


@task(name="commit-mixture", cache_policy=NO_CACHE)
def commit_mixture(plan: MixPlan, files: list[dict], started: str) -> dict:
    spec = plan.spec
    _, manifest = commit(spec.store, spec.name, build.manifest_body(plan, files, started), spec.storage_options)
    return manifest


@task(name="derive-mixture", cache_policy=NO_CACHE)
def derive_mixture(
    store: str,
    name: str,
    from_version: str | None,
    ids: list[str],
    url_patterns: list[str],
    reason: str,
    storage_options: dict[str, Any],
    ray_config: RayConfig,
) -> dict:
    """The takedown's new version (each data file of the parent one Ray task, rewritten when it holds
    an excluded document); its manifest."""
    return takedown.derive_manifest(
        store,
        name,
        from_version,
        ids=ids,
        url_patterns=url_patterns,
        reason=reason,
        storage_options=storage_options,
        executor=executor_for(ray_config),
    )


def weight_rows(manifest: dict) -> list[dict]:
    return [
        {
            "version": manifest["version"],
            "phase": p["name"],
            "group": g["name"],
            "sampling": g["sampling"],
            "requested_share": round(g["requested_share"], 6),
            "target_share": round(g["target_share"], 6),
            "realised_share": round(g["realised_share"], 6),
            "tokens": g["realised_tokens"],
            "docs": g["realised_docs"],
            "epochs": round(g["epochs"], 4),
            "short": g["short"],
        }
        for p in manifest["phases"]
        for g in p["groups"]
    ]


@task(name="publish-mixture-artifacts", cache_policy=NO_CACHE)
def publish_mixture_artifacts(manifest: dict, store: str, storage_options: dict[str, Any] | None = None) -> dict:
    """Table of realised weights, the data card (its plots embedded) and where the manifest is (a
    presigned link on S3, a path to copy on a local store), all keyed by the mixture's name: each
    version adds to the same artifact histories in the Prefect UI."""
    name, version = manifest["name"], manifest["version"]
    layout = MixtureLayout(store, name)
    create_table_artifact(
        key=artifact_key("mixture", name),
        table=weight_rows(manifest),
        description=f"mixture {name} {version}: realised weights ({layout.manifest(version)})",
    )
    card = ensure_card(store, name, version, storage_options)
    create_markdown_artifact(
        key=artifact_key("mixture", name, "card"),
        markdown=embed_images(card, layout.readme(version), storage_options),
        description=f"mixture {name} {version}: data card",
    )
    create_markdown_artifact(
        key=artifact_key("mixture", name, "manifest"),
        markdown=f"# Mixture `{name}` {version}: manifest\n\n{location(layout.manifest(version), storage_options)}\n",
        description=f"mixture {name} {version}: manifest",
    )
    return version_summary(manifest, store)
