"""curate: raw shards -> curated pool (normalize -> filter -> classify -> dedup, as configured; a
generating stage such as rephrase adds its rows beside the pool, in `generated`)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.parameters import Incremental, InputUri, RunId, StoreUri
from mixforge import planning
from mixforge.config import CurateConfig
from mixforge.runner import completed_outputs
from tasks.planning import mark_run_complete, plan_run
from tasks.reporting import publish_run_artifacts
from tasks.stages import stage_task

CURATE_EXAMPLE = {
    "stages": ["normalize", "filter", "dedup"],
    "filter": {"language_id": {"keep": ["en"], "thresholds": [{"language": "en", "min_score": 0.65}]}},
    "ray": {"num_cpus": 8},
}


@flow(name="curate", validate_parameters=True)
def curate(
    input: InputUri,
    output: StoreUri,
    config: Annotated[CurateConfig, Field(examples=[CURATE_EXAMPLE])] = CurateConfig(),
    run_id: RunId = None,
    incremental: Incremental = False,
) -> dict:
    """Curate raw shards at `input` into `{output}/runs/{run_id}/{stage}/`.

    Args:
        input: Raw shards to curate: a glob, a prefix (folder) or one file, local or an fsspec URI
            (JSONL, JSONL.gz/.zst, Parquet).
        output: The store root: runs go to `{output}/runs/{run_id}/`, the dedup index of incremental
            runs to `{output}/index/dedup` unless `config.dedup.index` names another.
        config: The stages to run and their settings (the curate YAML config: `mixforge curate --config`).
        run_id: Name of the run (lowercase letters, digits, dashes); empty: a hash of the input shards,
            the config and the code version, so a rerun with the same inputs resumes the same run.
        incremental: Curate only the input shards that no completed run of the store's pool has curated
            (same URI and size), deduplicated against the pool's dedup index (`dedup.index`, default
            `{output}/index/dedup`). With nothing new, nothing runs: the summary's `run_id` and `output`
            are null and `incremental.new_shards` is 0.
    """
    logger = get_run_logger()
    plan = plan_run(input, output, config, run_id, incremental)
    if plan.run is None:
        logger.info(
            "incremental: nothing new to curate at %s (%d shard(s), all curated already)",
            input,
            plan.incremental["input_shards"],
        )
        return {
            "run_id": None,
            "output": None,
            "resumed": False,
            "stages": [],
            "incremental": plan.incremental,
            "inputs": plan.inputs,
        }
    logger.info(
        "%s run %s: %s over %d shards -> %s",
        "resuming" if plan.resumed else "starting",
        plan.run.run_id,
        " -> ".join(plan.stages),
        len(plan.shards),
        plan.run.dir,
    )
    try:
        shards, summaries, output, generated = plan.shards, [], None, []
        for name in plan.stages:
            summary = stage_task(name)(name, plan.run, shards, plan.config)
            summaries.append(summary)
            if planning.generates(name):  # new rows beside the pool: the next stage reads what this one read
                generated.append(summary["output"])
            else:
                shards, output = completed_outputs(plan.run.stage(name), summary), summary["output"]

        result = {
            "run_id": plan.run.run_id,
            "output": output,
            "resumed": plan.resumed,
            "inputs": plan.inputs,
            "stages": [{k: v for k, v in s.items() if k != "shard_results"} for s in summaries],
        }
        if generated:
            result["generated"] = generated
        if plan.incremental is not None:
            result["incremental"] = plan.incremental
        mark_run_complete(plan.run, result, config.storage.options)
        publish_run_artifacts("curate", result)
        return result
    finally:
        planning.finish_run(plan.run)
