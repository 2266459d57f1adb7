"""Run leases on local disk and on a real S3 endpoint (moto): one live process per run id."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mixforge import lease, storage


def _run_dir(request, tmp_path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "runs" / "r1"), {}
    bucket, options = request.getfixturevalue("s3_bucket")
    return f"{bucket}/runs/r1", options


@pytest.fixture(params=["local", "s3"])
def run_dir(request, tmp_path):
    return _run_dir(request, tmp_path)


def test_a_second_acquire_is_refused_naming_the_holder(run_dir):
    path, options = run_dir
    first = lease.acquire(path, "r1", "ROOT", options, heartbeat=False)
    with pytest.raises(
        lease.LeaseHeld,
        match=r"run 'r1' is running in another process: process \d+ on .*"
        r"mixforge runs unlock r1 --store ROOT",
    ):
        lease.acquire(path, "r1", "ROOT", options)
    with pytest.raises(lease.LeaseHeld):
        lease.check_free(path, "r1", "ROOT", options)
    first.release()
    second = lease.acquire(path, "r1", "ROOT", options, heartbeat=False)
    assert second.generation == first.generation + 1
    second.release()
    assert lease.current(path, options)["released"] is True


def test_a_stale_lease_is_taken_over_and_its_old_holder_finds_out(run_dir):
    path, options = run_dir
    old = lease.acquire(path, "r1", "ROOT", options, ttl_s=0.5, heartbeat=False)
    time.sleep(0.8)  # no heartbeat for longer than the TTL: a killed run on another host
    assert lease.why_free(lease.current(path, options)).startswith("stale: last heartbeat")
    new = lease.acquire(path, "r1", "ROOT", options, heartbeat=False)
    with pytest.raises(lease.LeaseLost, match="taken over by generation"):
        old.heartbeat()
    old.release()  # a lost lease is not marked released: the new holder keeps it
    assert lease.current(path, options)["generation"] == new.generation
    assert lease.current(path, options)["released"] is False
    new.release()


def test_heartbeats_keep_a_lease_alive(tmp_path):
    path = str(tmp_path / "run")
    held = lease.acquire(path, "r1", "ROOT", ttl_s=0.4)  # beats every 0.1 s
    time.sleep(1.0)
    assert lease.why_free(lease.current(path)) is None  # older than the TTL, but alive
    held.release()
    assert lease.why_free(lease.current(path)) == "released"


def test_a_dead_process_on_this_host_frees_its_lease_at_once(tmp_path):
    """kill -9 and resume on one machine must not wait for the TTL."""
    path = str(tmp_path / "run")
    code = (
        "import sys; from mixforge import lease; lease.acquire(sys.argv[1], 'r1', 'ROOT', ttl_s=3600, heartbeat=False)"
    )
    subprocess.run([sys.executable, "-c", code, path], check=True)  # exits without releasing
    record = lease.current(path)
    assert record["released"] is False and record["ttl_s"] == 3600
    assert lease.why_free(record) == f"stale: process {record['pid']} on this host has ended"
    lease.acquire(path, "r1", "ROOT", heartbeat=False).release()


def test_racing_processes_get_exactly_one_lease(run_dir):
    path, options = run_dir
    won, refused = [], []
    barrier = threading.Barrier(6)

    def contend():
        barrier.wait()
        try:
            won.append(lease.acquire(path, "r1", "ROOT", options, heartbeat=False))
        except lease.LeaseHeld:
            refused.append(1)

    threads = [threading.Thread(target=contend) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 5
    won[0].release()


def test_unlock_releases_a_live_holder(run_dir):
    path, options = run_dir
    held = lease.acquire(path, "r1", "ROOT", options, heartbeat=False)
    released = lease.unlock(path, options)
    assert released["pid"] == held.record["pid"]
    assert lease.unlock(path, options) is None  # nothing left to release
    lease.acquire(path, "r1", "ROOT", options, heartbeat=False).release()
    fs, p = storage.filesystem(lease.lease_dir(path), options)
    assert len([n for n in fs.ls(p) if n.endswith(".json")]) == 2
