"""Prefect tasks around run planning (the logic lives in mixforge.planning): planning and
starting a run, marking it complete, and the pool a pipeline's mixture samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.planning import (PoolRun, RunPlan, incremental_config, new_shards, pool_runs)  # noqa: F401 - re-exported

__all__ = ["PoolRun", "RunPlan", "incremental_config", "new_shards", "pool_runs", "plan_run", "mark_run_complete",
           "curated_pool", "spec_with_pool", "latest_mixture_of_pool"]


@task(name="plan-run", cache_policy=NO_CACHE)
def plan_run(input: str, output: str, config: CurateConfig, run_id: str | None, incremental: bool = False) -> RunPlan:
    """Check and settle the run (the same checks as the CLI's pre-flight), then write its manifest
    and take its lease; the flow gives the lease up with `planning.finish_run`."""
    plan = planning.plan_curate(input, output, config, run_id, incremental)
    return plan if plan.run is None else planning.start_run(plan)


@task(name="mark-run-complete", cache_policy=NO_CACHE)
def mark_run_complete(run, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    planning.mark_run_complete(run, summary, storage_options)


# ----------------------------------------------------------------------------- the pool a mixture samples


@task(name="curated-pool", cache_policy=NO_CACHE)
def curated_pool(output: str, curated: dict, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The folders of curated shards a pipeline's mixture samples: the curate run's final-stage
    folder, or, for an incremental run, that of every completed run of its pool (sorted)."""
    if not curated.get("incremental"):
        return [curated["output"]]
    return sorted(r.output for r in pool_runs(output, curated["incremental"]["index"], storage_options))


def spec_with_pool(spec, pool: Sequence[str]):
    """A mixture spec sampling `pool` instead of the pool it names."""
    return spec.model_copy(update={"pool": list(pool)})


@task(name="latest-mixture-of-pool", cache_policy=NO_CACHE)
def latest_mixture_of_pool(store: str, name: str, pool: Sequence[str], spec=None,
                           storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The `mix` summary of mixture `name`'s latest version if it was built over exactly `pool`
    (and, when a spec is given, from that spec); None when there is no such version."""
    from mixforge.mixtures import versions

    try:
        manifest = versions.read_manifest(store, name, None, storage_options)
    except versions.VersionNotFound:
        return None
    if sorted(manifest["pool"]["inputs"]) != sorted(pool):
        return None
    if spec is not None:
        from mixforge.mixtures.takedown import with_standing_takedowns

        expected = with_standing_takedowns(spec_with_pool(spec, sorted(pool)))  # what `mix` would build from it
        if manifest["spec_hash"] != expected.spec_hash():
            return None
    return versions.summary(manifest, store)
