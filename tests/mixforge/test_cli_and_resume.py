"""The `mixforge` command: --json on stdout, clear errors, and kill-and-resume of a real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mixforge import cli
from tests.helpers import docs, write_shard

ENV = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_AUTH_MODE": "disabled"}


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True, env=ENV, timeout=600, **kwargs
    )


def test_bad_config_fails_before_any_work(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("normalize:\n  unicode_form: NFX\nray:\n  max_retries: -1\n")
    write_shard(str(tmp_path / "raw" / "a.jsonl"), docs(3))
    proc = run_cli(
        "curate", "--input", str(tmp_path / "raw"), "--output", str(tmp_path / "store"), "--config", str(cfg), "--json"
    )
    assert proc.returncode == 2
    failure = json.loads(proc.stdout)  # --json: exactly one JSON object, failures included
    assert failure["error_kind"] == "usage" and failure["errors"] == [
        f"{cfg}: normalize.unicode_form: Input should be 'NFC' or 'NFKC' (got 'NFX')",
        f"{cfg}: ray.max_retries: Input should be greater than or equal to 0 (got -1)",
    ]
    assert f"{cfg}: normalize.unicode_form" in proc.stderr and f"{cfg}: ray.max_retries" in proc.stderr
    assert not (tmp_path / "store").exists()


def test_missing_input_is_a_clear_error(tmp_path):
    proc = run_cli("curate", "--input", str(tmp_path / "nope" / "*.jsonl"), "--output", str(tmp_path / "store"))
    assert proc.returncode == 2 and "no input found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.usefixtures("ray_local", "prefect_harness")
def test_explicit_run_id_with_another_config_is_refused(tmp_path, capsys):
    write_shard(str(tmp_path / "raw" / "a.jsonl"), docs(3))
    base = [
        "curate",
        "--input",
        str(tmp_path / "raw"),
        "--output",
        str(tmp_path / "store"),
        "--run-id",
        "nightly",
        "--json",
        "-q",
    ]
    assert cli.main(base) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is only the JSON
    assert summary["run_id"] == "nightly" and summary["stages"][0]["docs_kept"] == 3
    cfg = tmp_path / "other.yaml"
    cfg.write_text("normalize:\n  fix_mojibake: false\n")
    assert cli.main(base + ["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "run 'nightly' already exists" in err and "normalize.fix_mojibake" in err


def _outputs(store: Path, run_id: str) -> dict[str, bytes]:
    stage = store / "runs" / run_id / "normalize"
    files = sorted(stage.glob("part-*.parquet")) + sorted((stage / "_removed").glob("part-*.parquet"))
    return {str(p.relative_to(stage)): p.read_bytes() for p in files}


def test_kill_and_resume_gives_identical_outputs(tmp_path):
    n_shards = 24
    for i in range(n_shards):
        rows = docs(1500, f"s{i}") + [{"text": "   "}, b"{bad json"]
        write_shard(str(tmp_path / "raw" / f"shard-{i:02d}.jsonl"), rows)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("stages: [normalize]\nray:\n  num_cpus: 1\n  max_shards_in_flight: 1\n")
    args = ["curate", "--input", str(tmp_path / "raw"), "--config", str(cfg), "--run-id", "killed", "--json", "-q"]

    # Start a run and kill its whole process group (driver, Ray workers) once a few shards are done.
    store = tmp_path / "store"
    done_dir = store / "runs" / "killed" / "normalize" / "_done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixforge.cli", *args, "--output", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.exists() and len(list(done_dir.glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # A Ray worker outside the process group may still finish the shard it holds before Ray's
    # reaper stops it: wait until the set of finished shards is stable.
    finished, stable_since = {}, time.monotonic()
    while time.monotonic() - stable_since < 3:
        now = {p.name: p.stat().st_mtime_ns for p in done_dir.glob("*.json")}
        if now != finished:
            finished, stable_since = now, time.monotonic()
        time.sleep(0.2)
    assert 3 <= len(finished) < n_shards
    # No reader ever sees a partial shard: every visible part is complete and readable.
    for part in (store / "runs" / "killed" / "normalize").glob("part-*.parquet"):
        pq.read_table(part)

    resumed = run_cli(*args, "--output", str(store))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    stage = summary["stages"][0]
    assert summary["resumed"] is True and stage["shards_skipped"] == len(finished)
    assert stage["docs_in"] == n_shards * 1502 and stage["docs_kept"] == n_shards * 1500
    assert stage["docs_dropped"] == {"empty_text": n_shards, "invalid_json": n_shards}
    # Only unfinished shards were recomputed: finished markers were not rewritten.
    assert {name: (done_dir / name).stat().st_mtime_ns for name in finished} == finished

    clean = run_cli(*args, "--output", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed_then_resumed, uninterrupted = _outputs(store, "killed"), _outputs(tmp_path / "clean", "killed")
    assert len(uninterrupted) == 2 * n_shards
    assert killed_then_resumed == uninterrupted  # byte-identical
