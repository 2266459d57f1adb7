"""The executors give the same results: in-process (SerialExecutor) and in a local process pool
(LocalPoolExecutor), including retries of failing calls and of calls whose worker process died."""

from __future__ import annotations

import os

import pytest

from mixforge.executor import LocalPoolExecutor, SerialExecutor, StepFailed, shutdown_local_pool


def square(x: int) -> int:
    return x * x


def fail_until(marker_dir: str, attempts_to_fail: int, x: int) -> int:
    """Raise on the first `attempts_to_fail` attempts of unit `x` (attempts counted in files)."""
    marker = os.path.join(marker_dir, f"{x}.attempts")
    seen = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(seen + 1))
    if seen < attempts_to_fail:
        raise ValueError(f"unit {x} attempt {seen + 1} failed")
    return x


def die_once(marker: str, x: int) -> tuple[int, int]:
    """The first call to get here kills its own worker process (as an OOM kill would)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return x, os.getpid()
    os.close(fd)
    os._exit(3)


@pytest.fixture
def pool():
    yield LocalPoolExecutor(2, max_retries=1)
    shutdown_local_pool()


@pytest.mark.parametrize("make", [lambda: SerialExecutor(max_retries=1), lambda: LocalPoolExecutor(2, max_retries=1)])
def test_executors_agree_on_results_folds_and_failures(make, tmp_path):
    executor = make()
    try:
        assert executor.map(square, [(i,) for i in range(20)]) == [i * i for i in range(20)]
        assert executor.map(square, [(i,) for i in range(20)], fold=lambda acc, r: (acc or 0) + r) == 2470
        # one retry: a unit failing once succeeds, a unit failing twice is named in StepFailed
        assert executor.map(fail_until, [(str(tmp_path), 1, 7)]) == [7]
        with pytest.raises(StepFailed) as failed:
            executor.map(fail_until, [(str(tmp_path), 2, 8), (str(tmp_path), 0, 9)], step="flaky")
        assert "1 of 2 unit(s) failed" in str(failed.value) and "unit 8 attempt 2 failed" in str(failed.value)
    finally:
        shutdown_local_pool()


def test_a_worker_that_dies_is_replaced_and_its_call_retried(pool, tmp_path):
    results = pool.map(die_once, [(str(tmp_path / "died"), i) for i in range(6)])
    assert [x for x, _ in results] == list(range(6))
    assert (tmp_path / "died").exists()
    assert os.getpid() not in {pid for _, pid in results}  # the calls ran in worker processes


def test_without_retries_a_dead_worker_fails_its_units_by_name(tmp_path):
    executor = LocalPoolExecutor(1, max_retries=0)
    try:
        with pytest.raises(StepFailed) as failed:
            executor.map(die_once, [(str(tmp_path / "died"), 0)], step="oom")
        assert "BrokenProcessPool" in str(failed.value)
        assert executor.map(square, [(3,)]) == [9]  # the next step gets a fresh pool
    finally:
        shutdown_local_pool()


def test_the_pool_runs_steps_defined_anywhere_as_ray_does():
    offset = 10

    def add_offset(x: int) -> int:  # a closure: standard pickle refuses it, Ray's cloudpickle does not
        return x + offset

    try:
        assert LocalPoolExecutor(2).map(add_offset, [(1,), (2,)]) == [11, 12]
    finally:
        shutdown_local_pool()
