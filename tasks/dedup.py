"""Prefect task for dedup: exact + MinHash-LSH fuzzy dedup over the whole input, on Ray.

A composite stage built from plain steps (mixforge.dedup.pipeline): signatures per shard ->
candidate edges per partition -> verification per shard -> clustering over edges only ->
the apply step, an ordinary stage (stats, `_removed/` audit, resume markers) -> with a
persistent index, appending this run's kept documents to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import ray
from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import progress, storage
from mixforge.config import CurateConfig
from mixforge.dedup import pipeline as dd
from mixforge.runs import RunLayout
from tasks.executor import ray_map
from tasks.stage_runner import StageFailed, read_options, run_stage

_REMOTES = {name: ray.remote(fn) for name, fn in {
    "lines": dd.count_shard_lines, "boilerplate": dd.boilerplate_partition, "signatures": dd.sign_shard, "edges": dd.partition_edges, "verify": dd.verify_shard_edges,
    "clusters": dd.cluster, "index-shards": dd.index_shard, "index-buckets": dd.index_partition}.items()}


def _collect(step: str, calls, config: CurateConfig) -> list:
    """Run one step's calls on Ray; fail the stage (naming the units) if any unit keeps failing."""
    reporter = progress.get()
    reporter.stage_started(f"dedup:{step}", len(calls), 0)
    results, failures = [], []
    for label, result, error in ray_map(_REMOTES[step], calls, config.ray):
        if error is not None:
            failures.append(f"  {step} {label}: {error}")
            continue
        results.append(result)
        reporter.shard_finished(f"dedup:{step}", {})
    if failures:
        raise StageFailed(f"dedup step {step!r}: {len(failures)} unit(s) failed (rerun the same run id to retry only these):\n"
                          + "\n".join(failures))
    return results


@task(name="dedup", cache_policy=NO_CACHE)
def deduplicate(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    started = time.perf_counter()
    opts = config.storage.options
    stage_layout = run.stage("dedup")
    work = dd.DedupLayout(stage_layout.dir)
    shards = [i for i, _ in inputs]
    index = dd.IndexLayout(config.dedup.index) if config.dedup.index else None
    cfg = dd.resolve_partitions(config.dedup, [uri for _, uri in inputs], index, opts)
    segments = dd.check_index(index, cfg, opts) if index else []

    # The driver only hands out work and sums small stats: signatures, buckets and edges go
    # from step to step through the store, partitioned, never through this process.
    boilerplate = None
    if cfg.boilerplate.enabled:
        _collect("lines", [(i, (i, uri, work, cfg, config.read.batch_rows, opts)) for i, uri in inputs], config)
        _collect("boilerplate", [(p, (p, shards, work, cfg, opts)) for p in range(cfg.partitions)], config)
        boilerplate = dd.read_boilerplate(work, cfg.partitions, opts)
    _collect("signatures", [(i, (i, uri, work, cfg, config.read.batch_rows, opts, boilerplate)) for i, uri in inputs], config)
    partitions = _collect("edges", [(p, (p, shards, work, opts, index, segments)) for p in range(cfg.partitions)], config)
    verify_stats = None
    verify = cfg.minhash.enabled and cfg.minhash.verify
    if verify:
        verify_stats = _collect("verify", [(s, (s, cfg.partitions, work, cfg.minhash, opts, index)) for s in shards], config)
    (cluster_stats,) = _collect("clusters", [("all", (shards, cfg.partitions, work, cfg, opts, index, verify))], config)

    summary = run_stage(dd.ApplyDedup(work, opts, boilerplate, cfg), stage_layout, inputs, config.ray, read_options(config), opts)

    if index is not None and cfg.update_index:
        summary["index"] = _append_to_index(index, work, run.run_id, shards, cfg.partitions, config)
    summary["dedup"] = {
        **cluster_stats,
        "partitions": cfg.partitions,
        "candidate_edges": sum(p["edges"] for p in partitions),  # per partition: a pair found in two partitions counts twice
        "fuzzy_candidates": (sum(v["candidates"] for v in verify_stats) if verify_stats is not None
                             else sum(p.get("fuzzy", 0) for p in partitions)),
        "fuzzy_verified": sum(v["verified"] for v in verify_stats) if verify_stats is not None else None,
        "verify_threshold": round(cfg.minhash.verify_threshold, 4) if verify else None,
        "index_segments_used": len(segments),
        "boilerplate_lines": None if boilerplate is None else int(len(boilerplate)),
        "seconds_total": round(time.perf_counter() - started, 3),
    }
    summary["seconds"] = summary["dedup"]["seconds_total"]
    storage.write_json(stage_layout.stats, summary, opts)  # _stats.json with the dedup figures
    return summary


def _append_to_index(index: dd.IndexLayout, work: dd.DedupLayout, run_id: str, shards: list[int], partitions: int,
                     config: CurateConfig) -> dict:
    opts = config.storage.options
    done = storage.join(work.stage_dir, "_work", "indexed.json")
    if storage.exists(done, opts):
        return storage.read_json(done, opts)
    seg = dd.claim_segment(index, work, run_id, opts)
    docs = sum(r["docs"] for r in _collect("index-shards", [(s, (seg, s, work, index, opts)) for s in shards], config))
    _collect("index-buckets", [(p, (seg, p, shards, work, index, opts)) for p in range(partitions)], config)
    dd.commit_segment(seg, run_id, docs, index, opts)
    result = {"uri": index.uri, "segment": seg, "docs_added": docs}
    storage.write_json(done, result, opts)
    return result
