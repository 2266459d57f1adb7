#!/usr/bin/env python
"""Seconds from `mixforge ...` to its first error, for each mistake the pre-flight check catches.

    .venv/bin/python -m benchmarks.bench_preflight
    .venv/bin/python -m benchmarks.bench_preflight --repeat 5 --json-out /tmp/preflight.json

Each case runs the real CLI in a fresh process (`python -m mixforge.cli ... --json`), so the
figure includes Python start-up and imports: what a user waits for. Before the pre-flight check
these errors came after Prefect's temporary server and Ray had started (10-25 s). The baseline
is `mixforge --help` (interpreter start-up and argument parsing only), measured in the same run.
Every case must exit 2 with one JSON object on stdout; the benchmark fails otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_preflight.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402


def cases(tmp: str) -> dict[str, list[str]]:
    raw = os.path.join(tmp, "raw")
    os.makedirs(raw)
    with open(os.path.join(raw, "a.jsonl"), "w") as f:
        f.write('{"text": "hello world"}\n')
    store = os.path.join(tmp, "store")
    as_file = os.path.join(tmp, "a-file")
    open(as_file, "w").close()
    model_cfg = os.path.join(tmp, "classify.yaml")
    with open(model_cfg, "w") as f:
        f.write(f"classify:\n  classifiers:\n    - name: edu\n      model: {store}/models/edu\n")
    spec = os.path.join(tmp, "spec.yaml")
    pool = os.path.join(tmp, "pool")
    os.makedirs(pool)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {"id": ["a"], "text": ["x y z"], "source": ["web"], "url": [None], "meta": [None]},
            schema=pa.schema(
                [
                    ("id", pa.string()),
                    ("text", pa.string()),
                    ("source", pa.string()),
                    ("url", pa.string()),
                    ("meta", pa.string()),
                ]
            ),
        ),
        os.path.join(pool, "part-00000.parquet"),
    )
    with open(spec, "w") as f:
        f.write(
            f"name: bench\npool: [{pool}]\nstore: {store}\nbudget_fraction: 1.0\n"
            "groups:\n  - name: g\n    where: {domain: [science]}\n    weight: 1.0\n"
        )
    return {
        "missing input": ["curate", "--input", os.path.join(tmp, "nope"), "--output", store],
        "glob matches nothing": ["curate", "--input", os.path.join(raw, "*.parquet"), "--output", store],
        "output is a file": ["curate", "--input", raw, "--output", as_file],
        "run id traversal": ["curate", "--input", raw, "--output", store, "--run-id", "../../escaped"],
        "missing classifier model": ["classify", "--input", raw, "--output", store, "--config", model_cfg],
        "mixture group on an unknown column": ["mix", "--spec", spec],
    }


def run(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    return time.perf_counter() - started, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    parser.add_argument("--json-out", metavar="FILE", help="write the results as JSON")
    opts = parser.parse_args()
    harness.configure_environment()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = [run(["--help"])[0] for _ in range(opts.repeat)]
        results["baseline: mixforge --help"] = {
            "median_s": round(statistics.median(baseline), 3),
            "runs_s": [round(x, 3) for x in baseline],
        }
        for name, args in cases(tmp).items():
            times = []
            for _ in range(opts.repeat):
                seconds, proc = run([*args, "--json"])
                summary = json.loads(proc.stdout)
                if proc.returncode != 2 or summary.get("error_kind") != "usage":
                    raise SystemExit(
                        f"{name}: expected exit 2 with a usage error, got {proc.returncode}: {proc.stderr[-2000:]}"
                    )
                times.append(seconds)
            results[name] = {
                "median_s": round(statistics.median(times), 3),
                "runs_s": [round(x, 3) for x in times],
                "error": summary["error"][:200],
            }
    doc = {"benchmark": "preflight", "environment": harness.environment(), "results": results}
    for name, r in results.items():
        print(f"{name:<40} {r['median_s']:>7.2f} s   {r.get('error', '')[:90]}")
    print(f"load average at end: {doc['environment'].get('loadavg_at_end')}")
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
