"""The Prefect task of every curation stage: the registered stage (mixforge.stages.registry) run on
Ray, then its report, if it has one, published as an artifact."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.runs import RunLayout
from mixforge.stages.registry import get_stage
from tasks.executor import executor_for
from tasks.reporting import publish_stage_report


# NO_CACHE: resumption is by per-shard and per-step markers in the store, never by a cached task
# result; retries happen per shard on Ray, so the task itself has none.
@task(name="curation-stage", cache_policy=NO_CACHE)
def run_curation_stage(name: str, run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    stage = get_stage(name)
    needs_ray = stage.needs_ray is not None and stage.needs_ray(config)
    summary = stage.run(run, inputs, config, executor_for(config.ray, needs_ray=needs_ray))
    publish_stage_report(run.run_id, summary, config.storage.options)
    return summary


def stage_task(name: str):
    """The task of stage `name`, named after it in the Prefect UI."""
    return run_curation_stage.with_options(name=name)
