"""One way to fan work out: an `Executor` maps a plain function over units of work.

Every step that runs over shards or partitions (a stage over its shards, each dedup step, the
classify fit and report, mixture planning and drawing, takedowns, the id check) is a plain,
picklable function whose outputs go through the store; an executor decides where its calls run:

* `SerialExecutor`: in this process, one call after another (tests, benchmarks, small jobs);
* `tasks.executor.RayExecutor`: as Ray tasks, a bounded number in flight, retried on failure.

Both give the same results, so a composite stage (dedup, classify) is library code that runs
in-process in a test and on a cluster unchanged. The base provides what every step gets:
retries, progress (`mixforge.progress`), failures collected and named by unit, and results in
call order or folded as they arrive (the driver then holds one aggregate, not every result).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixforge import progress


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
