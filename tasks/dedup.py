"""Prefect task for dedup: exact + MinHash-LSH fuzzy dedup over the whole input, on Ray.

A composite stage built from plain steps (mixforge.dedup.pipeline): signatures per shard ->
candidate edges per partition -> verification per shard -> clustering over edges only ->
the apply step, which is an ordinary stage (stats, `_removed/` audit, resume markers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow as pa
import ray
from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import progress, storage
from mixforge.config import CurateConfig
from mixforge.dedup import pipeline as dd
from mixforge.runs import RunLayout
from tasks.stage_runner import StageFailed, ray_map, read_options, run_stage

_sign = ray.remote(dd.sign_shard)
_edges = ray.remote(dd.partition_edges)
_verify = ray.remote(dd.verify_shard_edges)
_cluster = ray.remote(dd.cluster)


def _collect(step: str, calls, config: CurateConfig) -> list:
    reporter = progress.get()
    reporter.stage_started(f"dedup:{step}", len(calls), 0)
    results, failures = [], []
    for label, result, error in ray_map(calls=calls, remote_fn=_REMOTES[step], ray_config=config.ray):
        if error is not None:
            failures.append(f"  {step} {label}: {error}")
            continue
        results.append(result)
        reporter.shard_finished(f"dedup:{step}", {})
    if failures:
        raise StageFailed(f"dedup step {step!r}: {len(failures)} unit(s) failed (rerun the same run id to retry only these):\n"
                          + "\n".join(failures))
    return results


_REMOTES = {"signatures": _sign, "edges": _edges, "verify": _verify, "clusters": _cluster}


@task(name="dedup", cache_policy=NO_CACHE)
def deduplicate(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    started = time.perf_counter()
    cfg, opts = config.dedup, config.storage.options
    stage_layout = run.stage("dedup")
    work = dd.DedupLayout(stage_layout.dir)
    shards = [i for i, _ in inputs]
    batch_rows = config.read.batch_rows

    _collect("signatures", [(i, (i, uri, work, cfg, batch_rows, opts)) for i, uri in inputs], config)
    partitions = _collect("edges", [(p, (p, shards, work, opts)) for p in range(cfg.partitions)], config)
    candidates = dd.read_edges(work, cfg.partitions, opts)  # edges only: a small fraction of documents
    verified_shards = None
    if cfg.minhash.enabled and cfg.minhash.verify:
        src_shard = dd.key_shard(candidates.column("src").to_numpy())
        calls = [(s, (s, candidates.filter(pa.array(src_shard == s)), work, cfg.minhash.threshold, opts)) for s in shards]
        verify_stats = _collect("verify", calls, config)
        verified_shards = shards
    edges = dd.read_edges(work, cfg.partitions, opts, verified_shards)
    (cluster_stats,) = _collect("clusters", [("all", (edges, shards, work, cfg, opts))], config)

    summary = run_stage(dd.ApplyDedup(work, opts), stage_layout, inputs, config.ray, read_options(config), opts)
    summary["dedup"] = {
        **cluster_stats,
        "candidate_edges": sum(p["edges"] for p in partitions),
        "fuzzy_candidates": int((~candidates.column("exact").to_numpy()).sum()) if candidates.num_rows else 0,
        "fuzzy_verified": sum(v.get("verified", 0) for v in verify_stats) if verified_shards is not None else None,
        "seconds_total": round(time.perf_counter() - started, 3),
    }
    summary["seconds"] = summary["dedup"]["seconds_total"]
    storage.write_json(stage_layout.stats, summary, opts)  # _stats.json with the dedup figures
    return summary

