"""Prefect task for dedup: the library's dedup composite (mixforge.dedup.composite) on Ray."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.dedup.composite import run_dedup
from mixforge.runs import RunLayout
from tasks.executor import RayExecutor


@task(name="dedup", cache_policy=NO_CACHE)
def deduplicate(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    return run_dedup(run.stage("dedup"), run.run_id, inputs, config, RayExecutor(config.ray))
