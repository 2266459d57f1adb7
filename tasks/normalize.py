"""Prefect task for the normalize stage (raw shards -> contract documents), then ids made unique
across the run's shards (mixforge.ids: hash per shard -> duplicates per partition -> drop per
affected shard, each step fanned out on Ray)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import ray
from prefect import task
from prefect.cache_policies import NO_CACHE

from mixforge import ids, progress, storage
from mixforge.config import CurateConfig
from mixforge.runs import RunLayout
from tasks.executor import ray_map
from tasks.stage_runner import StageFailed, run_configured_stage

log = logging.getLogger("mixforge")

_REMOTES = {step: ray.remote(fn) for step, fn in ids.STEPS.items()}


def _on_ray(config: CurateConfig) -> ids.Mapper:
    def mapper(step: str, calls: list) -> list:
        if not calls:
            return []
        reporter = progress.get()
        reporter.stage_started(f"normalize:ids-{step}", len(calls), 0)
        results, failures = [], []
        for label, result, error in ray_map(_REMOTES[step], calls, config.ray):
            if error is not None:
                failures.append(f"  {step} {label}: {error}")
                continue
            results.append(result)
            reporter.shard_finished(f"normalize:ids-{step}", {})
        if failures:
            raise StageFailed(f"normalize id check, step {step!r}: {len(failures)} unit(s) failed "
                              "(rerun the same run id to retry only these):\n" + "\n".join(failures))
        return results
    return mapper


# NO_CACHE: resumption is by per-shard markers in the store, never by a cached task result.
@task(name="normalize", cache_policy=NO_CACHE)
def normalize(run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    summary = run_configured_stage("normalize", run, inputs, config)
    started = time.perf_counter()
    layout, opts = run.stage("normalize"), config.storage.options
    finished = [s for s in summary["shard_results"] if not s.get("quarantined")]
    check = ids.check_unique_ids(layout, [(s["index"], s["input"]) for s in finished], opts, _on_ray(config),
                                 docs={s["index"]: s["docs_kept"] for s in finished})
    if check["rewrote_now"]:
        summary = ids.restate_summary(summary, layout, opts)
    seconds = round(time.perf_counter() - started, 3)
    log.info("normalize: %d id(s) held by more than one shard, %d row(s) dropped as duplicate_id (id check: %.1fs)",
             check["duplicate_ids"], check["docs_dropped"], seconds)
    summary["id_check"] = {**{k: v for k, v in check.items() if k != "rewrote_now"}, "seconds": seconds}
    summary["seconds"] = round(summary["seconds"] + seconds, 3)
    storage.write_json(layout.stats, summary, opts)
    return summary
