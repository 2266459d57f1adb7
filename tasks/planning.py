"""Turning a user's input and output into a run: discovery, stages, run id, the run manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import schema as S
from mixforge.config import CurateConfig
from mixforge.runs import RunLayout, open_run
from mixforge.storage import discover_shards, filesystem

log = logging.getLogger("mixforge")


@dataclass(frozen=True)
class RunPlan:
    run: RunLayout
    shards: list[tuple[int, str]]  # (index, input URI); output shards keep the index
    stages: tuple[str, ...]
    resumed: bool


def is_contract_shard(uri: str, storage_options) -> bool:
    """A Parquet shard with the contract's core columns (a stage's output) needs no normalize."""
    if not uri.endswith(".parquet"):
        return False
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            names = set(pq.read_schema(f).names)
    except Exception:
        return False  # unreadable: let normalize quarantine it with a clear error
    return set(S.CORE_COLUMNS) <= names


@task(name="plan-run", cache_policy=NO_CACHE)
def plan_run(input: str, output: str, config: CurateConfig, run_id: str | None) -> RunPlan:
    """Discover the input shards, settle the stages and open (or resume) the run."""
    options = config.storage.options
    shards = discover_shards(input, options)
    if not shards:
        raise FileNotFoundError(f"no shards (.parquet, .jsonl, .jsonl.gz, .jsonl.zst) found at {input!r}")
    stages = tuple(config.stages)
    if "classify" in stages and len(stages) > 1 and not config.classify.enabled:
        stages = tuple(s for s in stages if s != "classify")  # classify runs when classifiers are configured
    if stages[0] != "normalize" and not is_contract_shard(shards[0].uri, options):
        log.info("input %s is raw (not contract Parquet): running normalize first", shards[0].uri)
        stages = ("normalize", *stages)
    config = config.model_copy(update={"stages": stages})
    run, resumed = open_run(output, shards, config.run_fingerprint(), run_id, options)
    return RunPlan(run, list(enumerate(s.uri for s in shards)), stages, resumed)
