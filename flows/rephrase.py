"""rephrase: curated contract shards -> synthetic rows (`<output>/runs/<run_id>/rephrase/`)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from mixforge import planning
from mixforge.rephrase.config import RephraseRunConfig
from tasks.rephrase import rephrase_documents
from tasks.reporting import publish_run_artifacts


@flow(name="rephrase", validate_parameters=True)
def rephrase(input: str, output: str, config: RephraseRunConfig, run_id: str | None = None) -> dict:
    """Rephrase the selected documents of `input` (contract shards, e.g. a curate output) with vLLM."""
    logger = get_run_logger()
    plan = planning.start_run(planning.plan_generating("rephrase", input, output, config, run_id))
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
