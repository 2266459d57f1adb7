"""A curation stage over its shards on Ray: the library's `runner.run_stage` with the Ray executor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mixforge import stages
from mixforge.config import CurateConfig, RayConfig
from mixforge.runner import StageFailed, completed_outputs  # noqa: F401 - re-exported for the stage tasks
from mixforge.runner import run_stage as run_stage_with
from mixforge.runs import RunLayout, StageLayout
from mixforge.shards import ReadOptions
from mixforge.stage import Stage
from tasks.executor import RayExecutor


def run_stage(stage: Stage, layout: StageLayout, inputs: Sequence[tuple[int, str]], ray_config: RayConfig,
              read_options: ReadOptions = ReadOptions(), storage_options: Mapping[str, Any] | None = None) -> dict:
    """Process every (index, input URI) with `stage` on Ray; the stage summary (also `_stats.json`)."""
    return run_stage_with(stage, layout, inputs, RayExecutor(ray_config), read_options, storage_options)


def read_options(config: CurateConfig) -> ReadOptions:
    return config.read_options()


def run_configured_stage(name: str, run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    """Build stage `name` from the curate config and run it into `run`'s folder for that stage."""
    return run_stage(stages.build(name, config), run.stage(name), inputs, config.ray,
                     read_options(config), config.storage.options)
