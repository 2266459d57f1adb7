"""Prefect task for the filter stage (language ID and heuristic rule sets)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.runs import RunLayout
from tasks.stage_runner import run_configured_stage


@task(name="filter", cache_policy=NO_CACHE)
def filter_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    return run_configured_stage("filter", run, inputs, config)
