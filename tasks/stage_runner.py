"""A plain stage over its shards: the library's `runner.run_stage` with the job's executor (Ray, or
the local pool where `MIXFORGE_EXECUTOR` chose it). Benchmarks and tests run single stages this
way; curation stages, rephrase included, go through `tasks.stages`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mixforge.config import RayConfig
from mixforge.runner import StageFailed, completed_outputs  # noqa: F401 - re-exported
from mixforge.runner import run_stage as run_stage_with
from mixforge.runs import StageLayout
from mixforge.shards import ReadConfig
from mixforge.stage import Stage
from tasks.executor import executor_for


def run_stage(
    stage: Stage,
    layout: StageLayout,
    inputs: Sequence[tuple[int, str]],
    ray_config: RayConfig,
    read_options: ReadConfig = ReadConfig(),
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """Process every (index, input URI) with `stage`; the stage summary (also `_stats.json`)."""
    return run_stage_with(stage, layout, inputs, executor_for(ray_config), read_options, storage_options)
