"""Turning a user's input and output into a run: discovery, run id, the run manifest."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge.config import CurateConfig
from mixforge.runs import RunLayout, open_run
from mixforge.storage import discover_shards


@task(name="plan-run", cache_policy=NO_CACHE)
def plan_run(input: str, output: str, config: CurateConfig, run_id: str | None) -> tuple[RunLayout, list[tuple[int, str]], bool]:
    """Discover the input shards and open (or resume) the run. Returns (run, indexed inputs, resumed)."""
    shards = discover_shards(input, config.storage.options)
    if not shards:
        raise FileNotFoundError(f"no shards (.parquet, .jsonl, .jsonl.gz, .jsonl.zst) found at {input!r}")
    fingerprint = {**config.run_fingerprint(), "stages": ["normalize"]}
    run, resumed = open_run(output, shards, fingerprint, run_id, config.storage.options)
    return run, list(enumerate(s.uri for s in shards)), resumed
