"""The dedup composite: its steps as one DAG over an injected executor.

    [lines -> boilerplate]  (optional) repeated lines, counted per shard, found per partition
    signatures              per shard
    edges                   per partition
    [verify]                per shard (MinHash verification on)
    clusters                one call over the edges
    apply                   an ordinary stage over the shards (stats, `_removed/` audit, resume markers)
    [index-shards -> index-buckets]  with a persistent index: this run's kept documents appended

Its working files (`<stage dir>/_work/`) are scratch: once the stage's outputs, `_stats.json` and the
index segment's commit are written, they are removed, and a rerun of the finished stage answers from
`_stats.json` and the commit marker (both outside `_work/`). The persistent index lives in its own
folder (`dedup.index`, e.g. `<root>/index/dedup`) and never points into a run's `_work/`.

The same code runs in this process (`SerialExecutor`, tests and benchmarks) and on Ray
(`tasks.executor.RayExecutor`, the Prefect task). The driver only hands out work and sums small
stats: signatures, buckets and edges go from step to step through the store, never through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mixforge import storage
from mixforge.config import CurateConfig
from mixforge.dedup import index as dedup_index
from mixforge.dedup import steps
from mixforge.dedup.apply import ApplyDedup
from mixforge.dedup.config import DedupConfig
from mixforge.dedup.layouts import DedupLayout, IndexLayout
from mixforge.dedup.partitions import resolve_partitions
from mixforge.dedup.run import DedupRun
from mixforge.executor import ONE_CPU, Call, Executor, Resources
from mixforge.runner import run_stage
from mixforge.runs import StageLayout


@dataclass(frozen=True)
class Step:
    """One dedup step: a plain function called as `fn(run, *args)` for each unit of work."""

    name: str
    fn: Callable[..., dict]
    resources: Resources = ONE_CPU  # every dedup step is single-threaded NumPy/Arrow on one CPU

    def map(self, executor: Executor, run: DedupRun, units: Mapping[Any, tuple]) -> list[dict]:
        """`fn(run, *args)` for each unit (label -> args: a shard or partition names it in errors), results
        in unit order; StepFailed names the units that kept failing."""
        return executor.map(
            self.fn,
            [Call(label, (run, *args)) for label, args in units.items()],
            step=f"dedup:{self.name}",
            resources=self.resources,
            storage_options=run.storage_options,
        )


LINES = Step("lines", steps.count_shard_lines)
BOILERPLATE = Step("boilerplate", steps.boilerplate_partition)
SIGNATURES = Step("signatures", steps.sign_shard)
EDGES = Step("edges", steps.partition_edges)
VERIFY = Step("verify", steps.verify_shard_edges)
CLUSTERS = Step("clusters", steps.cluster)
INDEX_SHARDS = Step("index-shards", dedup_index.index_shard)
INDEX_BUCKETS = Step("index-buckets", dedup_index.index_partition)


def plan_dedup(
    stage_dir: str,
    inputs: Sequence[tuple[int, str]],
    cfg: DedupConfig,
    batch_rows: int = 8192,
    storage_options: Mapping[str, Any] | None = None,
) -> DedupRun:
    """The run's shared settings: partitions resolved, the index (if any) created or checked."""
    index = IndexLayout(cfg.index) if cfg.index else None
    cfg = resolve_partitions(cfg, [uri for _, uri in inputs], index, storage_options)
    segments = dedup_index.check_index(index, cfg, storage_options) if index else []
    return DedupRun(
        DedupLayout(stage_dir), cfg, tuple(i for i, _ in inputs), index, tuple(segments), batch_rows, storage_options
    )


def run_dedup(
    stage_layout: StageLayout,
    run_id: str,
    inputs: Sequence[tuple[int, str]],
    config: CurateConfig,
    executor: Executor,
    *,
    keep_work: bool = False,
) -> dict:
    """Deduplicate (index, input URI) shards into `stage_layout` on `executor`; the stage summary with its
    `dedup` figures (and `index`, when this run's documents were appended to a persistent index), also
    written as `_stats.json`. Every step resumes from its markers: a rerun recomputes only what is missing,
    and a rerun of the finished stage nothing. `keep_work`: leave `_work/` in place (to inspect it)."""
    started = time.perf_counter()
    opts = config.storage.options
    finished = finished_summary(stage_layout, run_id, config.dedup, opts)
    if finished is not None:
        if not keep_work:
            remove_work(stage_layout, opts)  # a run stopped while removing it
        return finished
    run = plan_dedup(stage_layout.dir, inputs, config.dedup, config.read.batch_rows, opts)
    input_units = {i: (i, uri) for i, uri in inputs}
    shard_units = {i: (i,) for i in run.shards}
    partition_units = {p: (p,) for p in range(run.partitions)}

    if run.cfg.boilerplate.enabled:
        LINES.map(executor, run, input_units)
        BOILERPLATE.map(executor, run, partition_units)
        run = replace(run, boilerplate=steps.read_boilerplate(run))
    SIGNATURES.map(executor, run, input_units)
    partitions = EDGES.map(executor, run, partition_units)
    verified = VERIFY.map(executor, run, shard_units) if run.verify else None
    (cluster_stats,) = CLUSTERS.map(executor, run, {"all": ()})

    summary = run_stage(ApplyDedup(run), stage_layout, inputs, executor, config.read, opts, write_stats=False)

    appended = _index_run(run, run_id, executor) if run.index is not None and run.cfg.update_index else None
    if appended is not None:
        summary["index"] = appended.summary
    summary["dedup"] = _figures(run, cluster_stats, partitions, verified)
    summary["dedup"]["seconds_total"] = summary["seconds"] = round(time.perf_counter() - started, 3)
    # Before the segment's commit: a run whose documents are in the index always has its stats
    # (mixforge.planning.pool_runs counts such a run as finished).
    storage.write_json(stage_layout.stats, summary, opts)
    if appended is not None and not appended.committed:
        _commit(run, run_id, appended)
    if not keep_work:
        remove_work(stage_layout, opts)
    return summary


def finished_summary(
    stage_layout: StageLayout, run_id: str, cfg: DedupConfig, storage_options: Mapping[str, Any] | None = None
) -> dict | None:
    """The summary of the stage when an earlier attempt of `run_id` finished it, else None.

    Finished: `_stats.json` written and, when the run appends to an index, the segment it names
    committed by this run. Both live outside `_work/`, so this holds once the work files are gone
    (and a run stopped between its stats and its commit still has them, and resumes from them).
    """
    try:
        stats = storage.read_json(stage_layout.stats, storage_options)
    except FileNotFoundError:
        return None
    if "shard_results" not in stats:
        return None
    if cfg.index and cfg.update_index:
        segment = (stats.get("index") or {}).get("segment")
        if segment is None:
            return None
        try:
            marker = storage.read_json(IndexLayout(cfg.index).committed(int(segment)), storage_options)
        except FileNotFoundError:
            return None
        if marker.get("run_id") != run_id:
            return None
    results = [{**r, "skipped": True} for r in stats["shard_results"]]
    return {**stats, "shards_skipped": len(results), "shard_results": results}


def work_dir(stage_layout: StageLayout) -> str:
    """The stage's scratch: signatures, buckets, edges, assignments and resume markers of its steps."""
    return storage.join(stage_layout.dir, "_work")


def remove_work(stage_layout: StageLayout, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, path = storage.filesystem(work_dir(stage_layout), storage_options)
    fs.invalidate_cache(path)  # s3fs answers exists() from cached listings otherwise
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _figures(run: DedupRun, cluster_stats: dict, partitions: list[dict], verified: list[dict] | None) -> dict:
    """The `dedup` block of the summary (without `seconds_total`)."""
    boilerplate = run.boilerplate
    return {
        **cluster_stats,
        "partitions": run.partitions,
        # per partition: a pair found in two partitions counts twice
        "candidate_edges": sum(p["edges"] for p in partitions),
        "fuzzy_candidates": (
            sum(v["candidates"] for v in verified)
            if verified is not None
            else sum(p.get("fuzzy", 0) for p in partitions)
        ),
        "fuzzy_verified": sum(v["verified"] for v in verified) if verified is not None else None,
        "verify_threshold": round(run.cfg.minhash.verify_threshold, 4) if run.verify else None,
        "index_segments_used": len(run.segments),
        "boilerplate_lines": None if boilerplate is None else int(len(boilerplate)),
    }


@dataclass(frozen=True)
class _Appended:
    """This run's segment of the index: written, and `committed` once its commit marker is."""

    summary: dict[str, Any]  # the summary's `index` block: uri, segment, docs_added
    committed: bool


def _index_run(run: DedupRun, run_id: str, executor: Executor) -> _Appended:
    """Write this run's kept documents into its own index segment (not yet committed)."""
    if storage.exists(run.work.indexed, run.storage_options):
        return _Appended(storage.read_json(run.work.indexed, run.storage_options), committed=True)
    seg = dedup_index.claim_segment(run, run_id)
    docs = sum(r["docs"] for r in INDEX_SHARDS.map(executor, run, {s: (seg, s) for s in run.shards}))
    INDEX_BUCKETS.map(executor, run, {p: (seg, p) for p in range(run.partitions)})
    return _Appended({"uri": run.index.uri, "segment": seg, "docs_added": docs}, committed=False)


def _commit(run: DedupRun, run_id: str, appended: _Appended) -> None:
    """Commit the segment (later runs deduplicate against it), then mark this run's append done."""
    dedup_index.commit_segment(run, appended.summary["segment"], run_id, appended.summary["docs_added"])
    storage.write_json(run.work.indexed, appended.summary, run.storage_options)
