"""Prefect task for the normalize stage: raw shards -> contract documents with ids unique across
the run (the library's composite `run_normalize`, on Ray)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.runs import RunLayout
from mixforge.stages.normalize import run_normalize
from tasks.executor import RayExecutor


# NO_CACHE: resumption is by per-shard markers in the store, never by a cached task result.
@task(name="normalize", cache_policy=NO_CACHE)
def normalize(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    return run_normalize(run.stage("normalize"), inputs, config, RayExecutor(config.ray))
