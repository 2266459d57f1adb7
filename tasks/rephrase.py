"""Prefect tasks of the `rephrase` flow, a thin wrapper over the registered `rephrase` curation stage
(mixforge.stages.registry): its run planned by mixforge.planning, its settings as a curate config's
`extra_stages.rephrase`, run by the curation-stage task; and the rephrase run (if any) of a folder of
curated shards, for the pipeline."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.rephrase.config import RephraseRunConfig
from mixforge.runs import RunLayout
from tasks.stages import stage_task


@task(name="plan-rephrase", cache_policy=NO_CACHE)
def plan_rephrase(input: str, output: str, config: RephraseRunConfig, run_id: str | None) -> planning.RunPlan:
    """Check and settle the run (the CLI's pre-flight again), then write its manifest and take its
    lease; the flow gives the lease up with `planning.finish_run`."""
    return planning.start_run(planning.plan_generating("rephrase", input, output, config, run_id))


def stage_config(config: RephraseRunConfig) -> CurateConfig:
    """The rephrase flow's parameters as the curate config of a rephrase-only run (the run id stays the
    rephrase flow's own: `RephraseRunConfig.run_fingerprint`)."""
    return CurateConfig(
        stages=("rephrase",),
        extra_stages={"rephrase": config.rephrase.model_dump(mode="json")},
        ray=config.ray,
        storage=config.storage,
    )


def rephrase_documents(run: RunLayout, inputs: Sequence[tuple[int, str]], config: RephraseRunConfig) -> dict:
    """The rephrase stage over `inputs`: the curation-stage task, named `rephrase`."""
    return stage_task("rephrase")("rephrase", run, inputs, stage_config(config))


@task(name="rephrase-outputs", cache_policy=NO_CACHE)
def finished_rephrase_outputs(
    pool: Sequence[str], output: str, config: RephraseRunConfig
) -> tuple[list[str], list[str]]:
    """Split `pool` folders into (folders still to rephrase, rephrase outputs of the finished ones);
    a folder of generated rows (a curate run's own rephrase stage) is neither: it is synthetic already."""
    todo, done = [], []
    for folder in pool:
        if planning.is_generated_output(folder):
            continue
        run, finished = planning.generating_run_of("rephrase", folder, output, config)
        if finished:
            done.append(run.stage("rephrase").dir)
        else:
            todo.append(folder)
    return todo, done
