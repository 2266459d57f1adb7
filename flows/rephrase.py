"""rephrase: curated contract shards -> synthetic rows (`<output>/runs/<run_id>/rephrase/`)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from mixforge.rephrase.config import RephraseRunConfig
from mixforge.runs import open_run
from mixforge.storage import discover_shards
from tasks.rephrase import rephrase_documents
from tasks.reporting import publish_run_artifacts


@flow(name="rephrase", validate_parameters=True)
def rephrase(input: str, output: str, config: RephraseRunConfig, run_id: str | None = None) -> dict:
    """Rephrase the selected documents of `input` (contract shards, e.g. a curate output) with vLLM."""
    logger = get_run_logger()
    options = config.storage.options
    shards = discover_shards(input, options)
    if not shards:
        raise FileNotFoundError(f"no shards found at {input!r}")
    run, resumed = open_run(output, shards, config.run_fingerprint(), run_id, options)
    logger.info("%s run %s: rephrase over %d shards -> %s", "resuming" if resumed else "starting", run.run_id, len(shards), run.dir)
    summary = rephrase_documents(run, list(enumerate(s.uri for s in shards)), config)
    result = {"run_id": run.run_id, "output": summary["output"], "resumed": resumed,
              "stages": [{k: v for k, v in summary.items() if k != "shard_results"}]}
    publish_run_artifacts("rephrase", result)
    return result
