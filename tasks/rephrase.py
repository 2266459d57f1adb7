"""Prefect task for the rephrase stage: one vLLM engine per Ray worker (GPUs per worker =
tensor_parallel_size), the run's cap split over the input shards, finished shards skipped."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.rephrase.config import RephraseRunConfig
from mixforge.runs import RunLayout
from mixforge.stages.rephrase import RephraseStage
from tasks.stage_runner import run_stage


@task(name="rephrase", cache_policy=NO_CACHE)
def rephrase_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: RephraseRunConfig) -> dict:
    stage = RephraseStage(config.rephrase, shards=max(1, len(inputs)))
    return run_stage(stage, run.stage("rephrase"), inputs, config.ray, storage_options=config.storage.options)
