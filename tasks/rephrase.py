"""Prefect tasks for the rephrase stage: one vLLM engine per Ray worker (GPUs per worker =
tensor_parallel_size), the run's cap split over the input shards, finished shards skipped, and
the rephrase run (if any) of a folder of curated shards."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import storage
from mixforge.rephrase.config import RephraseRunConfig
from mixforge.runs import RunLayout, compute_run_id
from mixforge.stages.rephrase import RephraseStage
from tasks.stage_runner import run_stage


@task(name="rephrase", cache_policy=NO_CACHE)
def rephrase_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: RephraseRunConfig) -> dict:
    stage = RephraseStage(config.rephrase, shards=max(1, len(inputs)))
    return run_stage(stage, run.stage("rephrase"), inputs, config.ray, storage_options=config.storage.options)


def rephrase_run_of(input: str, output: str, config: RephraseRunConfig) -> tuple[RunLayout, bool]:
    """The rephrase run that the `rephrase` flow makes of `input` under `output` (by its default
    run id) and whether it has finished (its stage stats are written once every shard is done)."""
    shards = storage.discover_shards(input, config.storage.options)
    run = RunLayout(output, compute_run_id(shards, config.run_fingerprint()))
    return run, storage.exists(run.stage("rephrase").stats, config.storage.options)


@task(name="rephrase-outputs", cache_policy=NO_CACHE)
def finished_rephrase_outputs(
    pool: Sequence[str], output: str, config: RephraseRunConfig
) -> tuple[list[str], list[str]]:
    """Split `pool` folders into (folders still to rephrase, rephrase outputs of the finished ones)."""
    todo, done = [], []
    for folder in pool:
        run, finished = rephrase_run_of(folder, output, config)
        if finished:
            done.append(run.stage("rephrase").dir)
        else:
            todo.append(folder)
    return todo, done
