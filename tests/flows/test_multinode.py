"""Scale-out with real parts: a two-node Ray cluster on one machine (ray.cluster_utils).

The scenario runs as its own process (`python tests/flows/test_multinode.py WORKDIR`): it owns its Ray
cluster, so it never collides with the session's local Ray (the `ray_local` fixture). In that
process the curate flow joins the cluster through RAY_ADDRESS, exactly as on a real cluster:

1. a clean curate run spreads its shards over both nodes;
2. a second run of the same inputs loses the worker node (its processes are killed, no graceful
   shutdown) while a shard is in flight there; the run still completes, and its outputs are
   byte-identical to the clean run's.

Which node ran which shard is observed by wrapping the shard task with a recorder that touches
one file per attempt; the stage code itself runs unchanged.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers import REPO

N_SHARDS = 6
DOCS_PER_SHARD = 600
STAGES = ["normalize", "filter", "dedup"]


# --------------------------------------------------------------------------- the scenario process


def _write_inputs(raw: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tests.helpers import prose_docs, write_shard

    for i in range(N_SHARDS):
        rows = prose_docs(DOCS_PER_SHARD, f"s{i}", sentences=6)
        # an empty doc, an exact copy of a text under its own id (for dedup: a reused id is dropped
        # as duplicate_id before), a broken line
        rows += [{"text": "   "}, {**rows[0], "id": f"{rows[0]['id']}-copy"}] + [b"{bad json"]
        write_shard(str(raw / f"shard-{i:02d}.jsonl"), rows)


def _install_attempt_recorder(record_dir: Path, slow_dir: Path) -> None:
    """Wrap the shard task so every attempt leaves `<store>.<stage>.<shard>.<node>.<pid>.<ns>`.

    A flag file `<slow_dir>/<store>.<node>` makes that store's shards on that node take 3 s longer,
    so that the node can be killed while one of them is certainly in flight.
    """
    import ray

    import mixforge.runner as runner

    run_shard_on_worker = runner.run_shard_in_worker
    records, slow = str(record_dir), str(slow_dir)

    def recorded(token, stage, job, read_options, storage_options):
        node = ray.get_runtime_context().get_node_id()
        store = job.layout.dir.split("/runs/")[0].rstrip("/").rsplit("/", 1)[-1]
        name = (
            f"{store}.{job.layout.dir.rstrip('/').rsplit('/', 1)[-1]}.{job.index}."
            f"{node}.{os.getpid()}.{time.time_ns()}"
        )
        open(os.path.join(records, name), "w").close()
        if os.path.exists(os.path.join(slow, f"{store}.{node}")):
            time.sleep(3)
        return run_shard_on_worker(token, stage, job, read_options, storage_options)

    # run_stage looks the shard function up when it runs, and the executor ships this closure by value
    runner.run_shard_in_worker = recorded


def _attempts(record_dir: Path, store: str) -> list[dict]:
    out = []
    for p in record_dir.iterdir():
        s, stage, index, node, pid, ns = p.name.split(".")
        if s == store:
            out.append({"stage": stage, "index": int(index), "node": node, "pid": int(pid), "ns": int(ns)})
    return sorted(out, key=lambda a: a["ns"])


def scenario(workdir: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from mixforge import cli

    raw, records, slow = workdir / "raw", workdir / "attempts", workdir / "slow"
    records.mkdir(parents=True)
    slow.mkdir()
    _write_inputs(raw)
    cfg = workdir / "cluster.yaml"
    # max_shards_in_flight = cluster CPUs: a shard is always running on each node while work remains.
    cfg.write_text(f"stages: {json.dumps(STAGES)}\nray:\n  max_shards_in_flight: 2\n  max_retries: 3\n")

    node_args = dict(num_cpus=1, object_store_memory=128 << 20)
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    worker = cluster.add_node(**node_args)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # how a user points mixforge at a cluster
    _install_attempt_recorder(records, slow)

    from flows.curate import curate as curate_flow
    from mixforge.config import load_yaml

    config = load_yaml(cfg)

    def curate(store: str) -> dict:
        with cli.local_prefect_settings():
            return curate_flow(input=str(raw), output=str(workdir / store), config=config, run_id="scale-out")

    result: dict = {"head": cluster.head_node.node_id, "worker": worker.node_id}
    # 1. Clean run over both nodes.
    result["clean"] = curate("clean")
    result["nodes_alive_before"] = sum(1 for n in ray.nodes() if n["Alive"])

    # 2. Same run; the worker node dies while one of its shards is in flight. Ray's scheduler may
    # keep a whole run on the head node (where the driver is); such a try proves nothing, so the
    # run is tried again in a fresh store, up to three times, until the worker holds a shard.
    killed_at: dict = {}

    def finished(run_dir: Path, stage: str) -> set[int]:
        # Only finished markers: temp files of markers being written are in the same folder.
        done_dir = run_dir / stage / "_done"
        return {
            int(m.group(1))
            for p in (done_dir.iterdir() if done_dir.exists() else [])
            if (m := re.fullmatch(r"part-(\d+)\.json", p.name))
        }

    def kill_worker_mid_stage(store: str, stop: threading.Event) -> None:
        """Kill the worker node once it holds an unfinished shard of a stage in which another is done."""
        run_dir = workdir / store / "runs" / "scale-out"
        while not stop.is_set():
            on_worker = [a for a in _attempts(records, store) if a["node"] == worker.node_id]
            for stage in dict.fromkeys(a["stage"] for a in on_worker):
                done = finished(run_dir, stage)
                in_flight = sorted({a["index"] for a in on_worker if a["stage"] == stage} - done)
                if done and in_flight:
                    cluster.remove_node(worker, allow_graceful=False)
                    killed_at.update(ns=time.time_ns(), stage=stage, done=sorted(done), in_flight=in_flight)
                    return
            time.sleep(0.02)

    for store in ("killed", "killed-again", "killed-third"):
        (slow / f"{store}.{worker.node_id}").touch()
        stop = threading.Event()

        def watch(store: str = store, stop: threading.Event = stop) -> None:
            try:
                kill_worker_mid_stage(store, stop)
            except BaseException as e:  # surfaces in the test instead of dying with the thread
                killed_at["error"] = repr(e)

        killer = threading.Thread(target=watch, daemon=True)
        killer.start()
        result["killed"] = curate(store)
        stop.set()
        killer.join(timeout=5)
        result["killed_store"] = store
        if killed_at:
            break
    result["killed_at"] = killed_at
    # The GCS marks a node dead after its health checks time out: give it time to notice.
    deadline = time.monotonic() + 60
    while sum(1 for n in ray.nodes() if n["Alive"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    result["nodes_alive_after"] = sum(1 for n in ray.nodes() if n["Alive"])
    result["attempts"] = {"clean": _attempts(records, "clean"), "killed": _attempts(records, result["killed_store"])}
    ray.shutdown()
    cluster.shutdown()
    return result


# --------------------------------------------------------------------------- the tests


def _outputs(store: Path) -> dict[str, bytes | list]:
    """Kept shards as bytes; removed rows as rows with the store's own path written `<store>`
    (their drop details name the shard they came from, and the two runs use two stores)."""
    import pyarrow.parquet as pq

    run = store / "runs" / "scale-out"
    out: dict[str, bytes | list] = {
        str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("*/part-*.parquet"))
    }
    for p in sorted(run.glob("*/_removed/part-*.parquet")):
        rows = pq.read_table(p).to_pylist()
        out[str(p.relative_to(run))] = [
            {k: v.replace(str(store), "<store>") if isinstance(v, str) else v for k, v in r.items()} for r in rows
        ]
    return out


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_AUTH_MODE="disabled",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PYTHONPATH=str(REPO),
    )
    return env


def test_curate_spreads_over_two_nodes_and_survives_losing_one(tmp_path):
    env = {**_env(), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    head, worker = result["head"], result["worker"]
    assert result["nodes_alive_before"] == 2

    # The clean run spread its shards over both nodes (each has one CPU; two shards are in flight).
    clean = result["attempts"]["clean"]
    assert {a["node"] for a in clean} == {head, worker}
    assert any({a["node"] for a in clean if a["stage"] == stage} == {head, worker} for stage in STAGES)
    assert len({a["stage"] for a in clean if a["node"] == worker}) >= 2, "the worker node took part in one stage only"

    # The worker node died with a shard in flight there, in a stage that had finished others...
    killed_at = result["killed_at"]
    assert "error" not in killed_at, killed_at
    assert killed_at, "the worker node was never killed mid-stage"
    assert result["nodes_alive_after"] == 1
    assert killed_at["in_flight"] and not set(killed_at["in_flight"]) & set(killed_at["done"])
    attempts = result["attempts"]["killed"]
    for index in killed_at["in_flight"]:
        retried = [
            a
            for a in attempts
            if a["stage"] == killed_at["stage"] and a["index"] == index and a["ns"] > killed_at["ns"]
        ]
        assert retried and all(a["node"] == head for a in retried), f"shard {index} was not retried on the head"
    # ...and nothing ran on it afterwards.
    assert all(a["node"] == head for a in attempts if a["ns"] > killed_at["ns"])

    # Both runs completed with the same counts, and byte-identical outputs.
    for summary in (result["clean"], result["killed"]):
        assert [s["name"] for s in summary["stages"]] == STAGES
        normalize = summary["stages"][0]
        assert normalize["docs_in"] == N_SHARDS * (DOCS_PER_SHARD + 3)
        assert normalize["docs_dropped"] == {"empty_text": N_SHARDS, "invalid_json": N_SHARDS}
        assert summary["stages"][-1]["docs_dropped"], "dedup found the planted duplicates"
    assert [s["docs_kept"] for s in result["killed"]["stages"]] == [s["docs_kept"] for s in result["clean"]["stages"]]
    clean_out, killed_out = _outputs(tmp_path / "clean"), _outputs(tmp_path / result["killed_store"])
    assert len([k for k in clean_out if k.startswith("normalize/part-")]) == N_SHARDS
    assert killed_out == clean_out


def test_unreachable_ray_address_fails_clearly_without_a_local_ray(tmp_path):
    """RAY_ADDRESS names a cluster that is not there: the run fails, quickly and saying so."""
    from tests.helpers import docs, write_shard

    write_shard(str(tmp_path / "raw" / "a.jsonl"), docs(3))
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **_env(),
        "RAY_ADDRESS": f"127.0.0.1:{port}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "RAY_TMPDIR": str(tmp_path / "ray-tmp"),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mixforge.cli",
            "curate",
            "--input",
            str(tmp_path / "raw"),
            "--output",
            str(tmp_path / "store"),
            "--json",
            "-q",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (1, 2), proc.stderr[-3000:]  # failed (1) or refused as a config error (2)
    failure = json.loads(proc.stdout)  # --json: exactly one JSON object on stdout, failures included
    assert f"127.0.0.1:{port}" in failure["error"] and "not reachable" in failure["error"]
    assert f"127.0.0.1:{port}" in proc.stderr and "not reachable" in proc.stderr
    assert "started a local Ray" not in proc.stderr
    assert time.monotonic() - started < 90
    # Nothing was curated, and no local Ray session was created.
    assert not list((tmp_path / "store").glob("runs/*/normalize/part-*.parquet"))
    assert not (tmp_path / "ray-tmp").exists() or not list((tmp_path / "ray-tmp").glob("**/session_*"))


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = scenario(Path(sys.argv[1]))
    sys.stdout.flush()
    print(json.dumps(out))
