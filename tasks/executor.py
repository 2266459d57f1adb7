"""The Ray executor, and the choice between it and the local pool for a job.

The library's steps are plain functions (mixforge.executor); this is the only place that
turns them into Ray tasks: each call is a Ray task (bounded in flight, retried), through the
worker-side wrapper every executor uses (`mixforge.executor.call_on_worker`: the step's CPU
slot for Arrow, the driver's Secret-block credentials in memory). Ray is imported only when a
job runs on it: a small job in the local pool never pays its import or start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mixforge.config import RayConfig
from mixforge.executor import (
    ONE_CPU,
    Call,
    Executor,
    LocalPoolExecutor,
    Resources,
    call_on_worker,
    format_error,
    secrets_for,
)

_remote_call = None


def _remote():
    global _remote_call
    if _remote_call is None:
        import ray

        _remote_call = ray.remote(call_on_worker)
    return _remote_call


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
    import ray

    from tasks import ray_runtime

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
    submit = _remote().options(**options)
    secrets = secrets_for([Call(label, args) for label, args in calls], storage_options)
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


class RayExecutor(Executor):
    """Calls as Ray tasks on the cluster `ray_config` names (a local Ray by default)."""

    def __init__(self, ray_config: RayConfig) -> None:
        self.ray_config = ray_config
        self.max_retries = ray_config.max_retries

    def cluster_gpus(self) -> float:
        import ray

        from tasks import ray_runtime

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


# ----------------------------------------------------------------------------- which executor runs a job

# A job on this machine whose inputs are at most this size runs in a local process pool: starting
# Ray (8-12 s on a small machine) would cost more than the work. A named cluster always wins.
LOCAL_MAX_MB_DEFAULT = 256
EXECUTOR_ENV = "MIXFORGE_EXECUTOR"  # auto (default) | ray | local


def choose_executor(ray_config: RayConfig, input_bytes: int | None) -> str:
    """`local` or `ray` for a job over `input_bytes` of input, as `$MIXFORGE_EXECUTOR` asks (`auto`:
    local when no Ray cluster is named or already joined and the inputs are small). The choice is
    recorded in the environment, so every step of the job in this process (and the flows it runs)
    uses the same executor."""
    import os
    import sys

    from tasks.ray_runtime import resolve_address

    asked = os.environ.get(EXECUTOR_ENV, "auto").strip().lower() or "auto"
    if asked not in ("auto", "ray", "local"):
        raise ValueError(f"{EXECUTOR_ENV}={asked!r}: expected auto, ray or local")
    ray_joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if asked == "auto":
        limit = float(os.environ.get("MIXFORGE_LOCAL_MAX_MB", LOCAL_MAX_MB_DEFAULT)) * (1 << 20)
        small = input_bytes is not None and input_bytes <= limit
        named = resolve_address(ray_config) is not None
        asked = "local" if small and not named and not ray_joined else "ray"
    os.environ[EXECUTOR_ENV] = asked
    return asked


def executor_for(ray_config: RayConfig, needs_ray: bool = False) -> Executor:
    """The executor of a step: the local pool when this job chose it (`choose_executor`), else Ray.
    `needs_ray`: Ray whatever the job chose (the local pool ignores a step's GPUs and runtime_env)."""
    import os

    if not needs_ray and os.environ.get(EXECUTOR_ENV, "").strip().lower() == "local":
        return LocalPoolExecutor(ray_config.num_cpus, ray_config.max_retries)
    return RayExecutor(ray_config)
