"""Errors that can be known up front are found before Prefect or Ray start: one line naming the
file or field, exit 2, no traceback, nothing written; `--json` prints exactly one JSON object in
every outcome; SIGTERM/SIGINT end a run cleanly; a run id held by a live run is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixforge import lease
from mixforge.runs import RunLayout, open_run
from mixforge.storage import InputShard
from tests.helpers import docs, write_shard

ENV = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_AUTH_MODE": "disabled"}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def assert_refused(proc: subprocess.CompletedProcess, *expected: str) -> dict:
    """Exit 2, stdout exactly one JSON object with the error, one-line message on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert summary["exit_code"] == 2 and summary["error_kind"] == "usage"
    for text in expected:
        assert text in summary["error"], summary["error"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mixforge: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in errors[0]
    # found before Prefect or Ray started: neither logged anything
    assert "Starting temporary server" not in proc.stderr and "Beginning flow run" not in proc.stderr
    assert "started a local Ray" not in proc.stderr and "joined Ray cluster" not in proc.stderr
    return summary


@pytest.fixture
def raw(tmp_path) -> Path:
    write_shard(str(tmp_path / "raw" / "a.jsonl"), docs(5))
    return tmp_path / "raw"


def test_missing_input(tmp_path):
    proc = run_cli("curate", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "store"), "--json")
    assert_refused(proc, "--input", "nope")
    assert not (tmp_path / "store").exists()


def test_glob_matching_nothing(tmp_path, raw):
    proc = run_cli("curate", "--input", str(raw / "*.parquet"), "--output", str(tmp_path / "store"), "--json")
    assert_refused(proc, "--input", "*.parquet")
    assert not (tmp_path / "store").exists()


def test_output_is_a_file(tmp_path, raw):
    (tmp_path / "store").write_text("not a folder")
    proc = run_cli("filter", "--input", str(raw), "--output", str(tmp_path / "store"), "--json")
    assert_refused(proc, "--output", "is a file")


@pytest.mark.parametrize("run_id", ["../../escaped", "/tmp/absolute", "Nightly", "a/b"])
def test_run_id_that_would_become_another_path(tmp_path, raw, run_id):
    store = tmp_path / "deep" / "store"
    proc = run_cli("curate", "--input", str(raw), "--output", str(store), "--run-id", run_id, "--json")
    assert_refused(proc, "invalid run id")
    assert not store.exists() and not (tmp_path / "escaped").exists()


def test_missing_classifier_model(tmp_path, raw):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"classify:\n  classifiers:\n    - name: edu\n      model: {tmp_path / 'store' / 'models' / 'edu'}\n"
    )
    proc = run_cli(
        "classify", "--input", str(raw), "--output", str(tmp_path / "store"), "--config", str(cfg), "--json"
    )
    assert_refused(proc, "classify.classifiers[0].model", "no committed model version")
    assert not (tmp_path / "store" / "runs").exists()


def test_run_id_reused_with_another_config(tmp_path, raw):
    store = tmp_path / "store"
    shard = raw / "a.jsonl"
    open_run(str(store), [InputShard(str(shard), shard.stat().st_size)], {"stages": ["normalize"]}, "nightly")
    before = sorted(p for p in store.rglob("*"))
    proc = run_cli("curate", "--input", str(raw), "--output", str(store), "--run-id", "nightly", "--json")
    assert_refused(proc, "run 'nightly' already exists", "config differs")
    assert sorted(p for p in store.rglob("*")) == before


def test_run_id_held_by_a_live_run_is_refused(tmp_path, raw):
    """Two runs of one run id at once: the second refuses, naming the first (the test process holds it)."""
    store = tmp_path / "store"
    shard = raw / "a.jsonl"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("stages: [normalize]\n")
    from mixforge.config import load_yaml

    fingerprint = load_yaml(cfg).run_fingerprint()
    run, _ = open_run(str(store), [InputShard(str(shard), shard.stat().st_size)], fingerprint, "busy")
    held = lease.acquire(run.dir, "busy", str(store), heartbeat=False)
    try:
        proc = run_cli(
            "curate", "--input", str(raw), "--output", str(store), "--config", str(cfg), "--run-id", "busy", "--json"
        )
        assert_refused(
            proc, "run 'busy' is running in another process", f"process {os.getpid()}", "mixforge runs unlock busy"
        )
    finally:
        held.release()


def test_usage_error_still_prints_one_json_object(tmp_path):
    proc = run_cli("curate", "--output", str(tmp_path), "--json")  # --input missing
    assert proc.returncode == 2
    summary = json.loads(proc.stdout)
    assert summary["error_kind"] == "usage" and "--input" in summary["error"]


def test_runs_unlock(tmp_path, raw):
    store = tmp_path / "store"
    shard = raw / "a.jsonl"
    run, _ = open_run(str(store), [InputShard(str(shard), shard.stat().st_size)], {}, "stuck")
    lease.acquire(run.dir, "stuck", str(store), ttl_s=3600, heartbeat=False)  # as if held by a stuck process
    proc = run_cli("runs", "unlock", "stuck", "--store", str(store), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["released"] is True
    assert lease.why_free(lease.current(RunLayout(str(store), "stuck").dir)) == "released"
    assert_refused(run_cli("runs", "unlock", "nope", "--store", str(store), "--json"), "no run 'nope'")


# ----------------------------------------------------------------------------- failures and signals after start


def test_failed_run_prints_one_json_object(tmp_path, raw):
    """Shards that keep failing (a model file that does not match its card) give exit 1 and a JSON error."""
    model = tmp_path / "store" / "models" / "edu" / "v0001"
    model.mkdir(parents=True)
    (model / "model.bin").write_bytes(b"not a model")
    (model / "card.json").write_text(
        json.dumps(
            {
                "name": "edu",
                "version": "v0001",
                "kind": "binary-quality",
                "labels": ["hq", "lq"],
                "positive_label": "hq",
                "files": {"model.bin": {"sha256": "0" * 64, "bytes": 11}},
            }
        )
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"classify:\n  classifiers:\n    - name: edu\n      model: {model}\nray:\n  max_retries: 0\n  num_cpus: 1\n"
    )
    proc = run_cli(
        "classify", "--input", str(raw), "--output", str(tmp_path / "store"), "--config", str(cfg), "--json"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # nothing but the JSON reached stdout
    assert summary["error_kind"] == "failed" and summary["exit_code"] == 1 and summary["run_id"]
    assert "sha256" in summary["error"] or "failed" in summary["error"]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_a_run_cleanly(tmp_path, sig, code):
    for i in range(12):
        write_shard(str(tmp_path / "raw" / f"s{i:02d}.jsonl"), docs(3000, f"s{i}"))
    cfg = tmp_path / "slow.yaml"
    cfg.write_text("stages: [normalize]\nray:\n  num_cpus: 1\n  max_shards_in_flight: 1\n")
    store = tmp_path / "store"
    done_dir = store / "runs" / "sig" / "normalize" / "_done"
    args = ["curate", "--input", str(tmp_path / "raw"), "--output", str(store), "--config", str(cfg)]
    args += ["--run-id", "sig", "--json", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixforge.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        text=True,
    )
    deadline = time.monotonic() + 300
    while (
        time.monotonic() < deadline
        and proc.poll() is None
        and not (done_dir.exists() and any(done_dir.glob("*.json")))
    ):
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    started = _descendants(proc.pid)  # Ray's and Prefect's processes this run started
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-3000:]
    summary = json.loads(out)
    assert summary["error_kind"] == "interrupted" and summary["run_id"] == "sig" and "normalize" in summary["progress"]
    note = [line for line in err.splitlines() if "interrupted by" in line]
    assert len(note) == 1 and "resume with: mixforge curate" in note[0] and "--run-id sig" in note[0], err[-3000:]
    assert "Traceback" not in err and "core dumped" not in err.lower()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.5)
    assert not [p for p in started if _alive(p)], "processes the run started outlived it"
    assert lease.current(str(store / "runs" / "sig"))["released"] is True
    # and the run resumes from where it stopped
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    stage = json.loads(resumed.stdout)["stages"][0]
    assert stage["docs_kept"] == 12 * 3000 and stage["shards_skipped"] >= 1


def test_s3_store_refuses_traversal_and_a_missing_bucket(s3_bucket, tmp_path, raw):
    bucket, options = s3_bucket
    cfg = tmp_path / "s3.yaml"
    cfg.write_text(f"storage:\n  options:\n    endpoint_url: {options['endpoint_url']}\n")
    env = {**ENV, **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mixforge.cli", *args, "--config", str(cfg), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    assert_refused(
        cli("curate", "--input", str(raw), "--output", bucket, "--run-id", "../../escaped"), "invalid run id"
    )
    assert_refused(
        cli("curate", "--input", str(raw), "--output", "s3://no-such-bucket-here/pool"),
        "bucket 'no-such-bucket-here' does not exist",
    )
    import fsspec

    fs = fsspec.filesystem("s3", **options)
    assert fs.find(bucket) == []  # nothing written anywhere in the bucket


def test_mixture_spec_naming_an_unknown_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = tmp_path / "pool"
    pool.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x y z"], "source": ["web"]}), pool / "part-00000.parquet")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: m\npool: [{pool}]\nstore: {tmp_path / 'store'}\nbudget_fraction: 1.0\n"
        "groups:\n  - name: g\n    where: {domian: [science]}\n    weight: 1.0\n"
    )
    proc = run_cli("mix", "--spec", str(spec), "--json")
    assert_refused(proc, f"{spec}: groups[0].where.domian: unknown column 'domian'")
    assert not (tmp_path / "store").exists()


def test_takedown_refuses_credentials_on_the_command_line(tmp_path):
    proc = run_cli(
        "mixtures",
        "takedown",
        "m",
        "--id",
        "x",
        "--reason",
        "r",
        "--store",
        str(tmp_path),
        "--storage-options",
        '{"endpoint_url": "http://127.0.0.1:9", "secret": "hunter2"}',
        "--json",
    )
    summary = assert_refused(proc, "--storage-options", "secret")
    assert "hunter2" not in proc.stdout + proc.stderr and summary["exit_code"] == 2
