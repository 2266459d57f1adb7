"""Run one stage over many shards on Ray: bounded shards in flight, retries, resume, stats.

Shared by every stage task. Finished shards (a `_done` marker) are not scheduled again, so a
rerun of a run id recomputes only what is missing. A shard whose task still fails after its
retries makes the stage fail once every other shard is finished; a rerun then retries it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray

from mixforge import progress, storage
from mixforge import stages
from mixforge.config import CurateConfig, RayConfig
from mixforge.runner import ShardJob, format_traceback, run_shard, summarize_stage
from mixforge.runs import RunLayout, StageLayout
from mixforge.shards import ReadOptions
from mixforge.stage import Stage

from tasks import ray_runtime


log = logging.getLogger("mixforge")


class StageFailed(RuntimeError):
    pass


# Worker-side cache: one stage instance (and its loaded models) per worker process.
_WORKER_STAGES: dict[str, Stage] = {}


def _run_shard_on_worker(token: str, stage: Stage, job: ShardJob, read_options: ReadOptions,
                         storage_options: Mapping[str, Any] | None) -> dict:
    cached = _WORKER_STAGES.setdefault(token, stage)
    reset_peak_rss()  # so the shard's peak_rss_mb is this task's, not the worker's lifetime peak
    # One worker = one CPU slot: keep Arrow's own thread pool from oversubscribing the node.
    pa.set_cpu_count(max(1, int(cached.resources.cpus)))
    return run_shard(cached, job, read_options, storage_options)


_remote_run_shard = ray.remote(_run_shard_on_worker)


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (Linux; a no-op elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _call_with_secrets(secrets: Mapping[str, Mapping[str, Any]], fn, *args):
    """On the worker: run `fn(*args)` with the driver's Secret-block credentials resolvable in memory."""
    with storage.handed_secrets(secrets):
        return fn(*args)


_remote_call_with_secrets = ray.remote(_call_with_secrets)


def ray_map(remote_fn, calls: Sequence[tuple[Any, tuple]], ray_config: RayConfig, cpus: float = 1.0, gpus: float = 0.0,
            runtime_env: dict | None = None, storage_options: Mapping[str, Any] | None = None):
    """Run `remote_fn(*args)` for each (label, args) on Ray with a bound on tasks in flight.

    Yields (label, result, None) as tasks finish, or (label, None, error) for a task that still
    failed after `ray_config.max_retries` retries (worker death and exceptions alike).

    Credentials of a Prefect Secret block (`storage.secret_block`) are resolved here, on the driver
    (from `storage_options` and from any options dict among the top-level arguments), and go to
    each task as an argument, in memory: never in `runtime_env`, logs or files. Workers without a
    block authenticate from their own environment or instance role.
    """
    ray_runtime.connect(ray_config)
    limit = ray_config.max_shards_in_flight or 2 * ray_runtime.cluster_cpus()
    options = dict(num_cpus=cpus, num_gpus=gpus, max_retries=ray_config.max_retries, retry_exceptions=True)
    if runtime_env:
        options["runtime_env"] = runtime_env
    secrets = _secrets_for(calls, storage_options)
    if secrets:
        fn = getattr(remote_fn, "_function", remote_fn)  # the plain function behind ray.remote(fn)
        submit = _remote_call_with_secrets.options(**options, name=getattr(fn, "__name__", "task"))
    pending: dict[ray.ObjectRef, Any] = {}
    queue = list(reversed(calls))
    while queue or pending:
        while queue and len(pending) < limit:
            label, args = queue.pop()
            ref = submit.remote(secrets, fn, *args) if secrets else remote_fn.options(**options).remote(*args)
            pending[ref] = label
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            label = pending.pop(ref)
            try:
                yield label, ray.get(ref), None
            except Exception as e:
                yield label, None, format_traceback(getattr(e, "cause", None) or e)


def _secrets_for(calls: Sequence[tuple[Any, tuple]], storage_options: Mapping[str, Any] | None) -> dict[str, dict]:
    """Resolve (on the driver) every Secret block the calls refer to; all this process holds go along."""
    for opts in [storage_options, *(a for _, args in calls for a in args if isinstance(a, Mapping))]:
        if opts and storage.SECRET_BLOCK_OPTION in opts:
            storage.resolve_options(opts)
    return storage.resolved_secrets()


def finished_shards(layout: StageLayout, storage_options: Mapping[str, Any] | None) -> dict[int, dict]:
    """Stats of the shards already done in this stage, by index (one listing)."""
    return {s["index"]: {**s, "skipped": True} for s in storage.list_json(storage.join(layout.dir, "_done"), storage_options)}


def run_stage(stage: Stage, layout: StageLayout, inputs: Sequence[tuple[int, str]], ray_config: RayConfig,
              read_options: ReadOptions = ReadOptions(), storage_options: Mapping[str, Any] | None = None) -> dict:
    """Process every (index, input URI) with `stage`; returns the stage summary, also written as `_stats.json`."""
    started = time.perf_counter()
    done = finished_shards(layout, storage_options)
    todo = [ShardJob(i, uri, layout) for i, uri in inputs if i not in done]
    # Largest shards first: the stage then ends on small shards, not with every worker idle but
    # one busy with a big shard (sizes from one listing per folder; unknown sizes go last).
    sizes = storage.file_sizes([job.input_uri for job in todo], storage_options)
    todo.sort(key=lambda job: -sizes.get(job.input_uri, -1))
    results: list[dict] = [done[i] for i, _ in inputs if i in done]
    failures: list[tuple[ShardJob, str]] = []
    reporter = progress.get()
    reporter.stage_started(stage.name, len(inputs), len(results))

    if todo:
        ray_runtime.connect(ray_config)
        stage_ref = ray.put(stage)
        token = uuid.uuid4().hex
        calls = [(job, (token, stage_ref, job, read_options, storage_options)) for job in todo]
        for job, stats, error in ray_map(_remote_run_shard, calls, ray_config, stage.resources.cpus, stage.resources.gpus,
                                          stage.runtime_env, storage_options):
            if error is not None:
                log.error("shard %d (%s) failed: %s", job.index, job.input_uri, error)
                failures.append((job, error))
                continue
            results.append(stats)
            reporter.shard_finished(stage.name, stats)

    results.sort(key=lambda s: s["index"])
    summary = summarize_stage(stage.name, layout.dir, results, time.perf_counter() - started)
    if failures:
        lines = "\n".join(f"  shard {j.index} ({j.input_uri}): {err}" for j, err in failures)
        raise StageFailed(f"stage {stage.name!r}: {len(failures)} shard(s) failed after {ray_config.max_retries} retries "
                          f"(rerun the same run id to retry only these):\n{lines}")
    summary["shard_results"] = [{k: s.get(k) for k in ("index", "input", "quarantined", "docs_in", "docs_kept", "skipped")} for s in results]
    storage.write_json(layout.stats, summary, storage_options)
    reporter.stage_finished(stage.name, summary)
    return summary


def completed_outputs(layout: StageLayout, summary: dict) -> list[tuple[int, str]]:
    """(index, kept-shard URI) of every shard this stage finished: the next stage's inputs."""
    return [(s["index"], layout.part(s["index"])) for s in summary["shard_results"] if not s.get("quarantined")]


def read_options(config: CurateConfig) -> ReadOptions:
    r = config.read
    return ReadOptions(text_field=r.text_field, id_field=r.id_field, batch_rows=r.batch_rows,
                       batch_bytes=r.batch_bytes, max_doc_bytes=r.max_doc_bytes, default_source=r.source)


def run_configured_stage(name: str, run: RunLayout, inputs: Sequence[tuple[int, str]], config: CurateConfig) -> dict:
    """Build stage `name` from the curate config and run it into `run`'s folder for that stage."""
    return run_stage(stages.build(name, config), run.stage(name), inputs, config.ray,
                     read_options(config), config.storage.options)
