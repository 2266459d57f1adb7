"""curate: raw shards -> curated pool (normalize -> filter -> classify -> dedup, as they land)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from mixforge.config import CurateConfig
from tasks.normalize import normalize
from tasks.planning import plan_run
from tasks.reporting import publish_run_artifacts


@flow(name="curate", validate_parameters=True)
def curate(input: str, output: str, config: CurateConfig = CurateConfig(), run_id: str | None = None) -> dict:
    """Curate raw shards at `input` (glob, prefix or file URI) into `<output>/runs/<run_id>/`."""
    logger = get_run_logger()
    run, shards, resumed = plan_run(input, output, config, run_id)
    logger.info("%s run %s over %d shards -> %s", "resuming" if resumed else "starting", run.run_id, len(shards), run.dir)

    normalized = normalize(run, shards, config)

    stages = [normalized]
    summary = {"run_id": run.run_id, "output": stages[-1]["output"], "resumed": resumed,
               "stages": [{k: v for k, v in s.items() if k != "shard_results"} for s in stages]}
    publish_run_artifacts("curate", summary)
    return summary

