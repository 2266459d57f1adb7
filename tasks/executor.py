"""The Ray executor: each call of a library step is a Ray task (bounded in flight, retried).

The library's steps are plain functions (mixforge.executor); this is the only place that
turns them into Ray tasks. Every call runs through one worker-side wrapper that gives it its
CPU slot (Arrow's thread pool sized to the step's CPUs, so workers do not oversubscribe a
node) and the driver's Secret-block credentials, in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import ray

from mixforge import storage
from mixforge.config import RayConfig
from mixforge.executor import ONE_CPU, Call, Executor, Resources, format_error
from tasks import ray_runtime


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (Linux; a no-op elsewhere), so a call's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _call_on_worker(cpus: float, secrets: Mapping[str, Mapping[str, Any]], fn: Callable, *args):
    """On the worker: one CPU slot for Arrow, the driver's credentials in memory, then `fn(*args)`."""
    reset_peak_rss()
    pa.set_cpu_count(max(1, int(cpus)))
    with storage.handed_secrets(secrets):
        return fn(*args)


_remote_call = ray.remote(_call_on_worker)


def ray_map(
    fn: Callable,
    calls: Sequence[tuple[Any, tuple]],
    ray_config: RayConfig,
    cpus: float = 1.0,
    gpus: float = 0.0,
    runtime_env: dict | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[Any, Any, str | None]]:
    """Run `fn(*args)` for each (label, args) as Ray tasks, at most `ray.max_shards_in_flight` at once.

    Yields (label, result, None) as tasks finish, or (label, None, error) for a task that still
    failed after `ray_config.max_retries` retries (worker death and exceptions alike).

    Credentials of a Prefect Secret block (`storage.secret_block`) are resolved here, on the driver
    (from `storage_options` and from any options dict among the top-level arguments), and go to
    each task as an argument, in memory: never in `runtime_env`, logs or files. Workers without a
    block authenticate from their own environment or instance role.
    """
    fn = getattr(fn, "_function", fn)  # a ray.remote function: the plain function behind it
    ray_runtime.connect(ray_config)
    limit = ray_config.max_shards_in_flight or 2 * ray_runtime.cluster_cpus()
    options = dict(
        num_cpus=cpus,
        num_gpus=gpus,
        max_retries=ray_config.max_retries,
        retry_exceptions=True,
        name=getattr(fn, "__name__", "task"),
    )
    if runtime_env:
        options["runtime_env"] = runtime_env
    submit = _remote_call.options(**options)
    secrets = _secrets_for(calls, storage_options)
    pending: dict[ray.ObjectRef, Any] = {}
    queue = list(reversed(calls))
    while queue or pending:
        while queue and len(pending) < limit:
            label, args = queue.pop()
            pending[submit.remote(cpus, secrets, fn, *args)] = label
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            label = pending.pop(ref)
            try:
                yield label, ray.get(ref), None
            except Exception as e:
                yield label, None, format_error(getattr(e, "cause", None) or e)


def _secrets_for(calls: Sequence[tuple[Any, tuple]], storage_options: Mapping[str, Any] | None) -> dict[str, dict]:
    """Resolve (on the driver) every Secret block the calls refer to; all this process holds go along."""
    for opts in [storage_options, *(a for _, args in calls for a in args if isinstance(a, Mapping))]:
        if opts and storage.SECRET_BLOCK_OPTION in opts:
            storage.resolve_options(opts)
    return storage.resolved_secrets()


class RayExecutor(Executor):
    """Calls as Ray tasks on the cluster `ray_config` names (a local Ray by default)."""

    def __init__(self, ray_config: RayConfig) -> None:
        self.ray_config = ray_config
        self.max_retries = ray_config.max_retries

    def cluster_gpus(self) -> float:
        ray_runtime.connect(self.ray_config)
        return ray.cluster_resources().get("GPU", 0)

    def run(
        self,
        fn: Callable,
        calls: Sequence[Call],
        *,
        resources: Resources = ONE_CPU,
        runtime_env: dict | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[Any, Any, str | None]]:
        return ray_map(
            fn,
            [(c.label, c.args) for c in calls],
            self.ray_config,
            resources.cpus,
            resources.gpus,
            runtime_env,
            storage_options,
        )
