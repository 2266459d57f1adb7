"""Start-up: commands share one local Prefect server and run small jobs in a local process pool.

A real Prefect API server (the same app Prefect's temporary server runs) in a Prefect home of
the test's own; real `mixforge` commands in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mixforge import prefect_server
from mixforge.lease import pid_alive
from tests.helpers import REPO, docs, write_shard


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A Prefect home of this test's own, its shared server stopped at the end."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(prefect_server.SHARED_MARK_ENV, raising=False)
    yield tmp_path / "prefect-home"
    prefect_server.stop()


def test_the_server_is_started_once_reused_and_stopped(home):
    first = prefect_server.start_or_reuse()
    assert first.process is not None  # started now
    server = first.wait()
    assert prefect_server.healthy(server)
    again = prefect_server.start_or_reuse()
    assert again.process is None and again.server == server  # found running: reused, not started
    assert json.loads(prefect_server.state_path().read_text())["pid"] == server.pid
    assert prefect_server.stop() == server
    assert not prefect_server.healthy(server) and not prefect_server.state_path().exists()
    assert prefect_server.stop() is None  # nothing left to stop


def test_an_idle_server_stops_by_itself(home, monkeypatch):
    monkeypatch.setenv(prefect_server.IDLE_ENV, "4")
    server = prefect_server.start_or_reuse().wait()
    deadline = time.monotonic() + 60
    while pid_alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.5)  # no requests from here on (a health check would count as one)
    assert not pid_alive(server.pid)
    assert not prefect_server.state_path().exists()  # it forgot itself
    assert prefect_server.running() is None


def test_a_stale_record_is_replaced(home):
    home.mkdir(parents=True)
    prefect_server.state_path().write_text(json.dumps({"pid": 2**22 + 17, "port": 9, "prefect": "0"}))
    assert prefect_server.running() is None
    starting = prefect_server.start_or_reuse()
    assert starting.process is not None and starting.server.pid != 2**22 + 17
    starting.wait()


def _curate(tmp_path, env, *extra):
    return subprocess.run(
        [sys.executable, "-m", "mixforge.cli", "curate", "--input", str(tmp_path / "raw"), "--output",
         str(tmp_path / "store"), "--json", "-q", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_commands_share_the_server_and_run_small_jobs_without_ray(tmp_path, home):
    write_shard(str(tmp_path / "raw" / "a.jsonl"), docs(20))
    write_shard(str(tmp_path / "raw" / "b.jsonl"), docs(20, prefix="e"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = _curate(tmp_path, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting the shared local Prefect server" in first.stderr
    assert "started a local pool of" in first.stderr and "started a local Ray" not in first.stderr
    pid = json.loads(prefect_server.state_path().read_text())["pid"]
    summary = json.loads(first.stdout)
    assert [s["docs_in"] for s in summary["stages"]][0] == 40

    second = _curate(tmp_path, env, "--run-id", "second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "starting the shared local Prefect server" not in second.stderr  # reused
    assert json.loads(prefect_server.state_path().read_text())["pid"] == pid
    # the same kept data either way
    assert json.loads(second.stdout)["stages"][-1]["docs_kept"] == summary["stages"][-1]["docs_kept"]

    # Ray when asked for: the same run, the same outputs
    ray_env = {**env, "MIXFORGE_EXECUTOR": "ray", "MIXFORGE_PREFECT_SERVER": "temporary"}
    third = _curate(tmp_path, ray_env, "--run-id", "on-ray")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "started a local Ray" in third.stderr and "started a local pool of" not in third.stderr
    assert json.loads(third.stdout)["stages"][-1]["docs_kept"] == summary["stages"][-1]["docs_kept"]


def test_a_mix_is_sized_by_its_pool(tmp_path):
    """`mix` picks its executor by the size of the pool it samples (a small pool: no Ray to start)."""
    import argparse

    from mixforge import cli
    from mixforge.mixtures.spec import load_spec

    first = write_shard(str(tmp_path / "pool" / "a.parquet"), docs(5))
    second = write_shard(str(tmp_path / "pool" / "b.parquet"), docs(7, prefix="e"))
    spec = tmp_path / "spec.yaml"
    body = "name: small\npool: [{}]\nstore: store\nbudget_tokens: 1000\ngroups:\n  - {{name: all, weight: 1}}\n"
    spec.write_text(body.format("pool/"))
    mix = argparse.Namespace(command="mix", spec=str(spec))
    sized = cli._input_bytes(mix, cli.preflight_mix(mix))  # the pre-flight's spec
    assert sized == os.path.getsize(first) + os.path.getsize(second)
    spec.write_text(body.format("missing/"))
    unknown = load_spec(str(spec))  # (its pre-flight would refuse the missing pool)
    assert cli._input_bytes(mix, unknown) is None  # unknown: Ray decides
