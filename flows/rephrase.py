"""rephrase: curated contract shards -> synthetic rows (`{output}/runs/{run_id}/rephrase/`)."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.parameters import RunId, StoreUri
from mixforge import planning
from mixforge.rephrase.config import RephraseRunConfig
from tasks.rephrase import plan_rephrase, rephrase_documents
from tasks.reporting import publish_run_artifacts

# The `rephrase:` section of configs/rephrase.example.yaml, shortened.
REPHRASE_EXAMPLE = {
    "engine": {"model": "/models/Qwen2.5-1.5B-Instruct", "device": "gpu"},
    "select": {"quality_fineweb": {"max": 0.5}},
    "cap": {"tokens": 50_000_000},
    "styles": ["wikipedia", "qa"],
}


@flow(name="rephrase", validate_parameters=True)
def rephrase(
    input: Annotated[str, Field(examples=["s3://mixforge/runs/crawl-2026-11/dedup/"])],
    output: StoreUri,
    config: Annotated[RephraseRunConfig, Field(examples=[{"rephrase": REPHRASE_EXAMPLE}])],
    run_id: RunId = None,
) -> dict:
    """Rephrase the selected documents of `input` with vLLM into `{output}/runs/{run_id}/rephrase/`.

    Args:
        input: Contract shards to rephrase (e.g. a curate run's final folder): a glob, a prefix or a file.
        output: The store root: the run goes to `{output}/runs/{run_id}/rephrase/`.
        config: What to rephrase and how (`rephrase`: the engine, selection, styles; the rephrase YAML
            config), and where it runs (`ray`, `storage`).
        run_id: Name of the run; empty: a hash of the inputs, the config and the code version.
    """
    logger = get_run_logger()
    plan = plan_rephrase(input, output, config, run_id)
    run = plan.run
    logger.info(
        "%s run %s: rephrase over %d shards -> %s",
        "resuming" if plan.resumed else "starting",
        run.run_id,
        len(plan.shards),
        run.dir,
    )
    try:
        summary = rephrase_documents(run, plan.shards, config)
        result = {
            "run_id": run.run_id,
            "output": summary["output"],
            "resumed": plan.resumed,
            "inputs": plan.inputs,
            "stages": [{k: v for k, v in summary.items() if k != "shard_results"}],
        }
        publish_run_artifacts("rephrase", result)
        return result
    finally:
        planning.finish_run(run)
