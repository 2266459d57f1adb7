"""One way to fan work out: an `Executor` maps a plain function over units of work.

Every step that runs over shards or partitions (a stage over its shards, each dedup step, the
classify fit and report, mixture planning and drawing, takedowns, the id check) is a plain,
picklable function whose outputs go through the store; an executor decides where its calls run:

* `SerialExecutor`: in this process, one call after another (tests, benchmarks);
* `LocalPoolExecutor`: in a pool of worker processes on this machine (small jobs: no Ray to start);
* `tasks.executor.RayExecutor`: as Ray tasks, a bounded number in flight, retried on failure.

Both give the same results, so a composite stage (dedup, classify) is library code that runs
in-process in a test and on a cluster unchanged. The base provides what every step gets:
retries, progress (`mixforge.progress`), failures collected and named by unit, and results in
call order or folded as they arrive (the driver then holds one aggregate, not every result).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from mixforge import progress, storage

log = logging.getLogger("mixforge")


@dataclass(frozen=True)
class Resources:
    """What one call of a step needs on the worker that runs it."""

    cpus: float = 1.0
    gpus: float = 0.0


ONE_CPU = Resources()


class StepFailed(RuntimeError):
    """Some units of a step still failed after their retries (the message names each one)."""

    def __init__(self, step: str, failures: Sequence[tuple[Any, str]], total: int) -> None:
        self.step = step
        self.failures = list(failures)
        lines = "\n".join(f"  {step} {label}: {error}" for label, error in failures)
        super().__init__(
            f"step {step!r}: {len(failures)} of {total} unit(s) failed after retries "
            f"(rerun the same run id to retry only these):\n{lines}"
        )


@dataclass(frozen=True)
class Call:
    """One unit of work: `fn(*args)`, known to people by `label` (a shard index, a partition)."""

    label: Any
    args: tuple


class Executor(ABC):
    """Runs calls of one function; subclasses say where (`run`)."""

    max_retries: int = 0
    # The GPUs of the cluster the calls run on, asked only by steps that may use one (None: not
    # known here; in this process a step's own device choice decides, nothing is reserved).
    cluster_gpus: Callable[[], float] | None = None

    @abstractmethod
    def run(
        self,
        fn: Callable,
        calls: Sequence[Call],
        *,
        resources: Resources = ONE_CPU,
        runtime_env: dict | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[Any, Any, str | None]]:
        """Yield (label, result, None) as calls finish, or (label, None, error) for a call that still
        failed after `max_retries` retries. `storage_options` are the options the calls use (an
        executor that sends calls elsewhere hands their credentials over in memory)."""

    def map(
        self,
        fn: Callable,
        args: Sequence[tuple] | Sequence[Call],
        *,
        step: str | None = None,
        resources: Resources = ONE_CPU,
        fold: Callable[[Any, Any], Any] | None = None,
        runtime_env: dict | None = None,
        storage_options: Mapping[str, Any] | None = None,
        progress_name: str | None = None,
    ) -> Any:
        """`fn(*a)` for each argument tuple (or Call): the results in call order, or, with `fold`, the
        fold of them in finishing order (`fold(acc, result)`, acc starting at None: make it
        order-independent). Raises StepFailed naming every unit that kept failing."""
        step = step or getattr(fn, "__name__", "step")
        given = [a if isinstance(a, Call) else Call(i, tuple(a)) for i, a in enumerate(args)]
        calls = [Call(i, c.args) for i, c in enumerate(given)]  # positions as labels: results go back in order
        reporter = progress.get()
        shown = progress_name or step
        reporter.stage_started(shown, len(calls), 0)
        results: list[Any] = [None] * len(calls)
        acc, failures = None, []
        for i, result, error in self.run(
            fn, calls, resources=resources, runtime_env=runtime_env, storage_options=storage_options
        ):
            if error is not None:
                failures.append((given[i].label, error))
                continue
            if fold is not None:
                acc = fold(acc, result)
            else:
                results[i] = result
            reporter.shard_finished(shown, {})
        if failures:
            raise StepFailed(step, failures, len(calls))
        return acc if fold is not None else results


def format_error(e: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception_only(type(e), e)).strip()


class SerialExecutor(Executor):
    """Every call in this process, in order; a call that raises is retried up to `max_retries` times."""

    def __init__(self, max_retries: int = 0) -> None:
        self.max_retries = max_retries

    def run(
        self,
        fn: Callable,
        calls: Sequence[Call],
        *,
        resources: Resources = ONE_CPU,
        runtime_env: dict | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[Any, Any, str | None]]:
        for call in calls:
            for attempt in range(self.max_retries + 1):
                try:
                    result = fn(*call.args)
                except Exception as e:  # noqa: BLE001 - reported per unit, like a Ray task's failure
                    if attempt == self.max_retries:
                        yield call.label, None, format_error(e)
                    continue
                yield call.label, result, None
                break


# ----------------------------------------------------------------------------- what every worker does


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS counter (Linux; a no-op elsewhere), so a call's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def call_on_worker(cpus: float, secrets: Mapping[str, Mapping[str, Any]], fn: Callable, *args):
    """On a worker (a Ray task or a pool process): one CPU slot for Arrow, so workers do not
    oversubscribe the machine; the driver's Secret-block credentials in memory; then `fn(*args)`."""
    import pyarrow as pa

    reset_peak_rss()
    pa.set_cpu_count(max(1, int(cpus)))
    with storage.handed_secrets(secrets):
        return fn(*args)


def secrets_for(calls: Sequence[Call], storage_options: Mapping[str, Any] | None) -> dict[str, dict]:
    """Resolve (on the driver) every Secret block the calls refer to; all this process holds go along."""
    for opts in [storage_options, *(a for c in calls for a in c.args if isinstance(a, Mapping))]:
        if opts and storage.SECRET_BLOCK_OPTION in opts:
            storage.resolve_options(opts)
    return storage.resolved_secrets()


# ----------------------------------------------------------------------------- a local process pool


def _call_pickled(cpus: float, secrets: Mapping[str, Mapping[str, Any]], payload: bytes):
    """In a pool worker: the step and its arguments, pickled by cloudpickle as Ray pickles them (so a
    step defined in a test, a notebook or `__main__` runs in the pool as it runs on Ray)."""
    import cloudpickle

    fn, args = cloudpickle.loads(payload)
    return call_on_worker(cpus, secrets, fn, *args)


def _pool_worker_init() -> None:
    # The driver owns Ctrl-C: it stops the run and then the pool (a worker killed by SIGINT mid-write
    # would only leave a half-written temporary file, but its traceback would bury the resume hint).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Pool:
    """The one process pool of this process: started on first use, reused by every step of a run (its
    workers keep their imports and loaded models), stopped at exit or by `shutdown_local_pool`."""

    _lock = threading.Lock()
    _pool: futures.ProcessPoolExecutor | None = None
    _workers = 0

    @classmethod
    def get(cls, workers: int) -> futures.ProcessPoolExecutor:
        with cls._lock:
            if cls._pool is None or cls._workers != workers:
                cls._stop(kill=False)
                # forkserver: workers fork from a clean server process, never from this one (whose
                # threads - Prefect's, the progress bar's - fork does not copy safely).
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["pyarrow", "pyarrow.parquet", "polars", "mixforge.runner"])
                cls._pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker_init)
                cls._workers = workers
                log.info("started a local pool of %d worker process(es)", workers)
            return cls._pool

    @classmethod
    def discard(cls, pool: futures.ProcessPoolExecutor) -> None:
        """A worker died: the pool is broken for good; the next `get` starts a fresh one."""
        with cls._lock:
            if cls._pool is pool:
                cls._stop(kill=True)

    @classmethod
    def _stop(cls, kill: bool) -> None:
        pool, cls._pool = cls._pool, None
        if pool is None:
            return
        if kill:  # an interrupted run: stop work in flight now (its shards resume from their markers)
            for process in list(getattr(pool, "_processes", {}).values()):
                if process.is_alive():
                    process.kill()
        pool.shutdown(wait=not kill, cancel_futures=True)

    @classmethod
    def stop(cls, kill: bool = False) -> None:
        with cls._lock:
            cls._stop(kill)


def shutdown_local_pool(kill: bool = False) -> None:
    """Stop the local worker pool, if one was started (`kill`: without waiting for calls in flight)."""
    _Pool.stop(kill)


atexit.register(shutdown_local_pool)


def _ready() -> int:
    return os.getpid()


def warm_local_pool(workers: int | None = None) -> None:
    """Start the pool's worker processes now, in the background (a job that will use the pool can
    overlap their start with its own)."""
    workers = max(1, workers or os.cpu_count() or 1)
    pool = _Pool.get(workers)
    for _ in range(workers):
        pool.submit(_ready)


class LocalPoolExecutor(Executor):
    """Calls in a pool of worker processes on this machine: the start-up of a small job is the
    pool's (about a second), not a Ray cluster's. At most `workers` CPUs' worth of calls run at
    once; a call that raises, or whose worker process dies, is retried up to `max_retries` times."""

    def __init__(self, workers: int | None = None, max_retries: int = 0) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)  # as `warm_local_pool` counts them
        self.max_retries = max_retries

    def cluster_gpus(self) -> float:
        return 0.0  # GPUs are reserved through Ray only: steps that could use one run on the CPU here

    def run(
        self,
        fn: Callable,
        calls: Sequence[Call],
        *,
        resources: Resources = ONE_CPU,
        runtime_env: dict | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Iterator[tuple[Any, Any, str | None]]:
        import cloudpickle

        secrets = secrets_for(calls, storage_options)
        cpus = max(1.0, resources.cpus)
        limit = max(1, int(self.workers // cpus))
        queue = [(call, 0) for call in reversed(calls)]
        pending: dict[futures.Future, tuple[Call, int]] = {}
        pool = _Pool.get(self.workers)
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    call, attempt = queue.pop()
                    payload = cloudpickle.dumps((fn, call.args))
                    pending[pool.submit(_call_pickled, cpus, secrets, payload)] = (call, attempt)
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    if future not in pending:  # already counted with a broken pool, below
                        continue
                    call, attempt = pending.pop(future)
                    error = future.exception()
                    if error is None:
                        yield call.label, future.result(), None
                    elif attempt < self.max_retries:
                        queue.append((call, attempt + 1))
                    else:
                        yield call.label, None, format_error(error)
                    if isinstance(error, BrokenProcessPool):
                        # every call in flight died with the pool: each is retried like a lost Ray task
                        for lost, (other, tries) in list(pending.items()):
                            pending.pop(lost)
                            if tries < self.max_retries:
                                queue.append((other, tries + 1))
                            else:
                                yield other.label, None, format_error(error)
                        _Pool.discard(pool)
                        pool = _Pool.get(self.workers)
        finally:
            for future in pending:
                future.cancel()
