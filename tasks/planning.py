"""Prefect tasks around run planning (the logic lives in mixforge.planning): planning and
starting a run, marking it complete, and the pool a pipeline's mixture samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.planning import PoolRun, RunPlan, incremental_config, new_shards, pool_runs  # noqa: F401 - re-exported

__all__ = [
    "PoolRun",
    "RunPlan",
    "incremental_config",
    "new_shards",
    "pool_runs",
    "plan_run",
    "mark_run_complete",
    "curated_pool",
    "latest_mixture_of_pool",
    "mixture_spec",
]


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
    """The folders of curated shards a pipeline's mixture samples (mixforge.planning.curated_pool)."""
    return planning.curated_pool(output, curated, storage_options)


@task(name="latest-mixture-of-pool", cache_policy=NO_CACHE)
def latest_mixture_of_pool(
    store: str, name: str, pool: Sequence[str], spec=None, storage_options: Mapping[str, Any] | None = None
) -> dict | None:
    """The latest version of mixture `name` if it was built over exactly `pool` (and from `spec`)."""
    return planning.latest_mixture_of_pool(store, name, pool, spec, storage_options)


@task(name="mixture-spec", cache_policy=NO_CACHE)
def mixture_spec(
    pool: Sequence[str],
    output: str,
    mixture=None,
    name: str = "default",
    storage_options: Mapping[str, Any] | None = None,
):
    """The spec the pipeline mixes with: the user's, sampling `pool`, or every source at its natural share."""
    return planning.mixture_spec(pool, output, mixture, name, storage_options)
