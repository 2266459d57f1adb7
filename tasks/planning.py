"""Turning a user's input and output into a run: discovery, stages, run id, the run manifest;
and, for incremental curation, which input shards are new and which runs make up the pool.

Incremental curation (the nightly pipeline) works on a *pool*: the completed curate runs under
`<output>/runs/` that deduplicated against, and appended to, one persistent dedup index
(`dedup.index`; by default `<output>/index/dedup`).

- A run is **completed** when `<output>/runs/<run_id>/_complete.json` exists: the curate flow
  writes it once every stage, the dedup index update included, has finished.
- An input shard is **already curated** when a completed run of the pool took it as input with
  the same URI and size (what a run id hashes). A shard rewritten with another size counts as
  new; documents of it that the pool already has are then removed as duplicates by the index.
- The pool's curated data is each of those runs' final-stage folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import schema as S
from mixforge import storage
from mixforge.config import CurateConfig
from mixforge.dedup.pipeline import IndexLayout
from mixforge.runs import RunLayout, open_run
from mixforge.storage import InputShard, discover_shards, filesystem

log = logging.getLogger("mixforge")

COMPLETE_MARKER = "_complete.json"


@dataclass(frozen=True)
class RunPlan:
    run: RunLayout | None  # None: incremental, and nothing new to curate
    shards: list[tuple[int, str]]  # (index, input URI); output shards keep the index
    stages: tuple[str, ...]
    resumed: bool
    config: CurateConfig | None = None  # the config the stages run with (stages settled, the index set)
    incremental: dict[str, Any] | None = field(default=None)  # what incremental selection found


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
def plan_run(input: str, output: str, config: CurateConfig, run_id: str | None, incremental: bool = False) -> RunPlan:
    """Discover the input shards, settle the stages and open (or resume) the run.

    Incremental: only shards that no completed run of the pool has curated; when there are none,
    the plan has no run (`run` is None) and nothing is created in the store.
    """
    options = config.storage.options
    if incremental:
        config = incremental_config(config, output)
    shards = discover_shards(input, options)
    info = None
    if incremental:
        runs = pool_runs(output, config.dedup.index, options)
        new = new_shards(shards, runs)
        info = {"input_shards": len(shards), "already_curated": len(shards) - len(new), "new_shards": len(new),
                "index": config.dedup.index, "pool_runs": [r.run_id for r in runs]}
        log.info("incremental: %d input shard(s) at %s, %d already curated by %d completed run(s), %d new",
                 len(shards), input, info["already_curated"], len(runs), len(new))
        if not new:
            return RunPlan(None, [], (), False, config, info)
        shards = new
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
    return RunPlan(run, list(enumerate(s.uri for s in shards)), stages, resumed, config, info)


# ----------------------------------------------------------------------------- run completion


def completion_marker(run: RunLayout) -> str:
    return storage.join(run.dir, COMPLETE_MARKER)


@task(name="mark-run-complete", cache_policy=NO_CACHE)
def mark_run_complete(run: RunLayout, summary: dict, storage_options: Mapping[str, Any] | None = None) -> None:
    """Record that every stage of `run` has finished (written last, after the dedup index update)."""
    final = summary["stages"][-1] if summary["stages"] else {}
    record = {"run_id": run.run_id, "output": summary["output"], "stages": [s["name"] for s in summary["stages"]],
              "docs_kept": final.get("docs_kept"), "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.write_json(completion_marker(run), record, storage_options)


# ----------------------------------------------------------------------------- incremental


def default_dedup_index(output: str) -> str:
    """Where an incremental pool keeps its dedup index when the config names none."""
    return storage.join(output, "index", "dedup")


def incremental_config(config: CurateConfig, output: str) -> CurateConfig:
    """The config of an incremental run: dedup runs, against the pool's index, and appends to it."""
    if "dedup" not in config.stages:
        raise ValueError("incremental curation deduplicates new shards against the pool's dedup index: "
                         f"add 'dedup' to config.stages (got {list(config.stages)})")
    if not config.dedup.update_index:
        raise ValueError("incremental curation needs dedup.update_index: true, or tomorrow's shards would not be "
                         "deduplicated against tonight's documents")
    if config.dedup.index:
        return config
    index = default_dedup_index(output)
    log.info("incremental: no dedup.index configured; using the pool's default index %s", index)
    return config.model_copy(update={"dedup": config.dedup.model_copy(update={"index": index})})


@dataclass(frozen=True)
class PoolRun:
    run_id: str
    output: str  # the final stage's folder: the run's curated shards
    inputs: frozenset[tuple[str, int | None]]  # (URI, size) of every input shard it curated


def list_run_ids(root: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    fs, path = filesystem(storage.join(root, "runs"), storage_options)
    fs.invalidate_cache(path)  # s3fs caches listings: tonight must see last night's runs
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
    return sorted(n for n in names if not n.startswith(("_", ".")))


def _exists(uri: str, storage_options) -> bool:
    fs, path = filesystem(uri, storage_options)
    fs.invalidate_cache(path.rsplit("/", 1)[0])  # s3fs answers from cached listings otherwise
    return fs.exists(path)


def _read_optional(uri: str, storage_options) -> Any | None:
    try:
        return storage.read_json(uri, storage_options)
    except FileNotFoundError:
        return None


def pool_runs(root: str, index: str, storage_options: Mapping[str, Any] | None = None) -> list[PoolRun]:
    """The completed runs under `<root>/runs/` whose dedup ran against `index` (sorted by run id).

    A run that finished its stages and its index update but died before writing its completion
    marker is counted as completed (and marked): its documents are in the index already, so
    curating its shards again would only drop them all as duplicates of themselves.
    """
    in_index = IndexLayout(index).committed_runs(storage_options)

    def load(run_id: str) -> PoolRun | None:
        run = RunLayout(root, run_id)
        manifest = _read_optional(run.manifest, storage_options)
        if manifest is None:
            return None  # not a run (or one still being created)
        config = manifest.get("config") or {}
        stages = config.get("stages") or []
        if (config.get("dedup") or {}).get("index") != index or not stages:
            return None  # another pool's run, or one without dedup
        final = run.stage(stages[-1])
        if not _exists(completion_marker(run), storage_options):
            if run_id not in in_index or not _exists(final.stats, storage_options):
                return None  # unfinished: its shards are still to be curated
            log.warning("run %s finished (its documents are in the dedup index %s) but was not marked complete: "
                        "marking it now", run_id, index)
            record = {"run_id": run_id, "output": final.dir, "stages": stages, "repaired": True}
            storage.create_only(completion_marker(run), json.dumps(record, indent=2, sort_keys=True).encode(), storage_options)
        inputs = frozenset((s["uri"], s.get("size")) for s in manifest.get("inputs", []))
        return PoolRun(run_id, final.dir, inputs)

    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(load, list_run_ids(root, storage_options)))
    return [r for r in runs if r is not None]


def new_shards(found: Sequence[InputShard], runs: Sequence[PoolRun]) -> list[InputShard]:
    """The input shards no run of the pool has curated (same URI and size)."""
    curated = set().union(*(r.inputs for r in runs)) if runs else set()
    return [s for s in found if (s.uri, s.size) not in curated]


# ----------------------------------------------------------------------------- the pool a mixture samples


@task(name="curated-pool", cache_policy=NO_CACHE)
def curated_pool(output: str, curated: dict, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The folders of curated shards a pipeline's mixture samples: the curate run's final-stage
    folder, or, for an incremental run, that of every completed run of its pool (sorted)."""
    if not curated.get("incremental"):
        return [curated["output"]]
    return sorted(r.output for r in pool_runs(output, curated["incremental"]["index"], storage_options))


def spec_with_pool(spec, pool: Sequence[str]):
    """A mixture spec sampling `pool` instead of the pool it names."""
    return spec.model_copy(update={"pool": list(pool)})


@task(name="latest-mixture-of-pool", cache_policy=NO_CACHE)
def latest_mixture_of_pool(store: str, name: str, pool: Sequence[str], spec=None,
                           storage_options: Mapping[str, Any] | None = None) -> dict | None:
    """The `mix` summary of mixture `name`'s latest version if it was built over exactly `pool`
    (and, when a spec is given, from that spec); None when there is no such version."""
    from mixforge.mixtures import versions

    try:
        manifest = versions.read_manifest(store, name, None, storage_options)
    except versions.VersionNotFound:
        return None
    if sorted(manifest["pool"]["inputs"]) != sorted(pool):
        return None
    if spec is not None:
        from mixforge.mixtures.takedown import with_standing_takedowns

        expected = with_standing_takedowns(spec_with_pool(spec, sorted(pool)))  # what `mix` would build from it
        if manifest["spec_hash"] != expected.spec_hash():
            return None
    return versions.summary(manifest, store)
