#!/usr/bin/env python
"""Start-up: wall time of `mixforge curate` and `mixforge classify` on the demo corpus against the
seconds of their stages' own work, in one run.

    .venv/bin/python -m benchmarks.bench_startup --json-out /tmp/startup.json

"Work" is the same stages run in-process, one after another, with no Prefect, no Ray and no pool
(`SerialExecutor`), in a fresh process, timing only the stage calls (their lazy imports and model
loads included, as in the command): what the command would cost with no orchestration at all.
"Overhead" is wall minus work: interpreter and imports, the Prefect API, workers, shutdown. The
command runs its shards two at a time (pool or Ray), so overhead can come out below the fixed
costs; `own_stages_s` (the stage seconds the command itself reports) and `overhead_vs_own_stages_s`
are given too.

Each command runs in a fresh process, as a user runs it, in four set-ups:

* `shared-first`: the default in a new Prefect home: the very first command creates Prefect's
  database (its migrations: about 10 s, once per Prefect home) and starts the shared server;
* `shared-cold`: the default with the database there but no server running (the first command
  of the day: it starts the server in the background, overlapping its own imports);
* `shared-warm`: the default again, the server now running (every later command);
* `temporary-ray`: as before 0.3 (Prefect's temporary server and a local Ray for every command:
  `MIXFORGE_PREFECT_SERVER=temporary MIXFORGE_EXECUTOR=ray`), the baseline.

The goal (#16): the whole command at most 12 s wall on a quiet machine, fixed overhead at most 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_startup.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

SETUPS = {
    "shared-first": {},
    "shared-cold": {},
    "shared-warm": {},
    "temporary-ray": {"MIXFORGE_PREFECT_SERVER": "temporary", "MIXFORGE_EXECUTOR": "ray"},
}
GOAL_WALL_S, GOAL_OVERHEAD_S = 12.0, 5.0


def _env(prefect_home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MIXFORGE_EXECUTOR", "RAY_ADDRESS")}
    env.update(PREFECT_HOME=str(prefect_home), PYTHONPATH=str(harness.REPO), **extra)
    return env


def _mixforge(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args, "--json", "-q"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mixforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, json.loads(proc.stdout)


WORK_SCRIPT = r"""
import json, sys, time
from mixforge import planning
from mixforge.config import CurateConfig, load_yaml
from mixforge.executor import SerialExecutor
from mixforge.runner import completed_outputs
from mixforge.stages.registry import get_stage

input, output, config_path, command = sys.argv[1:5]
config = load_yaml(config_path or None, CurateConfig)
if command != "curate":
    config = config.model_copy(update={"stages": (command,)})
plan = planning.plan_curate(input, output, config, None, False)
shards, seconds = plan.shards, {}
for name in plan.stages:
    started = time.perf_counter()
    summary = get_stage(name).run(plan.run, shards, plan.config, SerialExecutor())
    seconds[name] = time.perf_counter() - started
    shards = completed_outputs(plan.run.stage(name), summary)
print(json.dumps(seconds))
"""


def _work(input: str, output: str, config: str, command: str) -> dict[str, float]:
    """Seconds of each stage of `command`, run in-process in a fresh interpreter, nothing else timed."""
    proc = subprocess.run(
        [sys.executable, "-c", WORK_SCRIPT, input, output, config, command],
        env=_env(Path(output) / "_unused-prefect-home", {}),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"in-process {command} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stop_server(home: Path) -> None:
    from mixforge import prefect_server

    saved = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    try:
        prefect_server.stop()
    finally:
        if saved is None:
            os.environ.pop("PREFECT_HOME")
        else:
            os.environ["PREFECT_HOME"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json-out", metavar="FILE", help="also write the report here")
    args = parser.parse_args()
    harness.configure_environment()
    from mixforge.cli import demo_corpus_path

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mixforge-bench-startup-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    demo = demo_corpus_path()
    home = work / "prefect-home"

    # A quality model for classify (not timed): Austen's chapters against Jargon File entries.
    model_store = str(work / "models")
    _mixforge(
        [
            "train-classifier",
            "--name",
            "quality",
            "--output",
            model_store,
            "--positive",
            f"{demo}/austen-0.jsonl.zst",
            "--negative",
            f"{demo}/jargon-file.parquet",
        ],
        _env(work / "prefect-home-training", {"MIXFORGE_PREFECT_SERVER": "temporary"}),
    )
    classify_config = work / "classify.yaml"
    classify_config.write_text(
        f"classify:\n  classifiers:\n    - name: quality\n      model: {model_store}/models/quality\n"
    )

    # The work: both commands' stages in-process (the classify input is the curated pool).
    reference = str(work / "reference")
    curate_work = _work(demo, reference, "", "curate")
    curated = f"{reference}/runs/" + os.listdir(f"{reference}/runs")[0] + "/dedup"
    classify_work = _work(curated, reference, str(classify_config), "classify")

    rows, figures = [], {}
    for setup, extra in SETUPS.items():
        env = _env(home, extra)
        store = str(work / f"store-{setup}")
        if setup in ("shared-first", "shared-cold"):
            _stop_server(home)  # no server running: this command starts it
        curate_wall, curated_summary = _mixforge(["curate", "--input", demo, "--output", store], env)
        if setup == "shared-first":
            _stop_server(home)  # the classify of a first day: the database is there now
        classify_wall, classify_summary = _mixforge(
            ["classify", "--input", curated_summary["output"], "--output", store, "--config", str(classify_config)],
            env,
        )
        for command, wall, stage_seconds, summary in (
            ("curate", curate_wall, curate_work, curated_summary),
            ("classify", classify_wall, classify_work, classify_summary),
        ):
            work_s = sum(stage_seconds.values())
            own_s = sum(s["seconds"] for s in summary["stages"])
            figures[f"{setup}/{command}"] = {
                "wall_s": round(wall, 2),
                "work_s": round(work_s, 2),
                "overhead_s": round(wall - work_s, 2),
                "own_stages_s": round(own_s, 2),
                "overhead_vs_own_stages_s": round(wall - own_s, 2),
                "stages_s": {k: round(v, 2) for k, v in stage_seconds.items()},
            }
            rows.append(
                f"{setup:<14} {command:<9} {wall:6.1f} s wall  {work_s:5.1f} s work  {wall - work_s:5.1f} s overhead"
                f"  ({own_s:5.1f} s of its own stages: {wall - own_s:5.1f} s around them)"
            )

    _stop_server(home)
    doc = {
        "benchmark": "startup",
        "environment": harness.environment(),
        "goal": {"wall_s": GOAL_WALL_S, "overhead_s": GOAL_OVERHEAD_S},
        "figures": figures,
        "goal_met_cold_and_warm": all(
            figures[f"{setup}/{c}"]["wall_s"] <= GOAL_WALL_S
            and figures[f"{setup}/{c}"]["overhead_s"] <= GOAL_OVERHEAD_S
            for setup in ("shared-cold", "shared-warm")
            for c in ("curate", "classify")
        ),
    }
    print("\n".join(rows))
    env = doc["environment"]
    print(f"load average (start, end): {env.get('loadavg_at_start')} {env.get('loadavg_at_end')}")
    print(json.dumps(doc, indent=2) if not args.json_out else f"report: {args.json_out}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
