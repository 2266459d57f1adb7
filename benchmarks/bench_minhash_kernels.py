"""MinHash signatures close to the hardware (issue #20): mixforge's signature step beside lean kernels,
and the whole dedup against datatrove, on the realistic corpus (benchmarks/realistic_corpus.py).

    .venv/bin/python benchmarks/bench_minhash_kernels.py --datatrove-python /tmp/dt-venv/bin/python
    .venv/bin/python benchmarks/bench_minhash_kernels.py --scales 1,2,4 --skip-datatrove   # orchestration, RSS

1. Signatures (signatures and exact hashes of every document, batches of 8192 rows as `sign_shard`
   reads them), one process, single-threaded, in MB of text per CPU-second, each variant in its own
   fresh interpreter: `cold` = its imports, tables, JIT load or compile and the first pass over the
   corpus; `cold, compiling` = the same with an empty numba cache (NUMBA_CACHE_DIR); `warm` = the
   best of two more passes. Variants: `mixforge` (the signature step: `kernel.sign`), `mixforge,
   Arrow/numpy` (the definition it replaced: MinHasher.signatures + exact_hashes), `lean numpy`,
   `lean numba` (benchmarks/lean_minhash.py). Reading the Parquet shards is not counted.
2. Whole dedup (the composite's steps in `--workers` bare processes, no Ray/Prefect: CPU of the whole
   process tree, the driver and each worker apart) against datatrove's MinHash (bench_dedup.run_datatrove)
   at each of --datatrove-scales (default: every scale), scored on the planted near-copies: a removed
   document is right when it was removed in favour of a document of its own planted group; recall = right
   removals / planted copies. The workers are fresh processes (only `mixforge.dedup.composite` imported
   before the clock starts), so what a worker pays once (pandas, numba, the compiled kernel's load, the
   character tables) is counted in each of them.
3. At each of --scales: whole dedup CPU seconds per shard and per MB, and the peak RSS per worker (each
   worker's VmHWM after the run; no sampling thread, whose CPU would be counted as ours).
4. `--breakdown`: at each scale, in a fresh interpreter with the steps run serially, where the CPU goes:
   the one-off start-up costs one at a time (pandas, the numba import, the tables, the kernel's load; the
   import of the composite, which the pool's workers do before the clock starts, is shown apart),
   each step's CPU seconds, and the work files each step leaves (`_work/`, kept for the count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402
from benchmarks.realistic_corpus import build_realistic_corpus  # noqa: E402

VARIANTS = {
    "mixforge": "mixforge.dedup.kernel",
    "mixforge, Arrow/numpy (before)": "mixforge.dedup.minhash",
    "lean numpy": "benchmarks.lean_minhash",
    "lean numba": "benchmarks.lean_minhash",
}

# One variant in a fresh interpreter; prints its CPU seconds (cold: import + first pass; warm: best of 2).
_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
import pyarrow as pa, pyarrow.parquet as pq
files = json.loads(sys.argv[2])
batches = [b.column("text") for p in files for b in pq.ParquetFile(p).iter_batches(8192, columns=["text"])]
name = sys.argv[1]
t0 = time.process_time()
if name == "mixforge":
    from mixforge.dedup.config import ExactConfig
    from mixforge.dedup.kernel import sign
    from mixforge.dedup.minhash import MinHasher
    hasher, ex = MinHasher(), ExactConfig()
    run = lambda t: sign(t, hasher, ex)
elif name.startswith("mixforge, Arrow"):
    from mixforge.dedup.hashing import exact_hashes
    from mixforge.dedup.minhash import MinHasher
    hasher = MinHasher()
    run = lambda t: (hasher.signatures(t), exact_hashes(t))
elif name == "lean numpy":
    from benchmarks.lean_minhash import lean_numpy as run
else:
    from benchmarks.lean_minhash import lean_numba as run
def one_pass():
    for t in batches:
        run(t)
one_pass()
cold = time.process_time() - t0
warm = []
for _ in range(2):
    t1 = time.process_time(); one_pass(); warm.append(time.process_time() - t1)
print("RESULT " + json.dumps({"cold": cold, "warm": min(warm)}))
"""


# The whole dedup run serially in a fresh interpreter: the one-off start-up costs one at a time, then each step.
_BREAKDOWN = r"""
import json, shutil, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import numpy as np, pyarrow as pa
startup = {}
def clock(name, fn):
    t = time.process_time(); r = fn(); startup[name] = round(time.process_time() - t, 3); return r
clock("pandas (pyarrow's first conversion)", lambda: pa.array(np.zeros(1)))
clock("numba import", lambda: __import__("numba"))
# what the benchmark's pool workers import before the clock starts (numba too, when mixforge.config imports it)
comp = clock("[before the clock] mixforge.dedup.composite import", lambda: __import__("mixforge.dedup.composite",
                                                                                   fromlist=["run_dedup"]))
from mixforge.config import CurateConfig
from mixforge.executor import SerialExecutor
from mixforge.runs import RunLayout
shards, out = json.loads(sys.argv[1]), Path(sys.argv[2])
kernel = clock("kernel module import", lambda: __import__("mixforge.dedup.kernel", fromlist=["sign"]))
clock("character tables", kernel.char_tables)
from mixforge.dedup.config import ExactConfig
from mixforge.dedup.minhash import MinHasher
tiny = pa.array(["a b c d e f"])
clock("compiled kernel load (numba registries, scipy)", lambda: kernel.sign(tiny, MinHasher(), ExactConfig()))
steps = {}
def timed_step(name, fn):
    def run(*a, **k):
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            steps[name] = steps.get(name, 0.0) + time.process_time() - t
    return run
for attr in ("SIGNATURES", "EDGES", "VERIFY", "CLUSTERS"):
    step = getattr(comp, attr)
    setattr(comp, attr, comp.Step(step.name, timed_step(step.name, step.fn), step.resources))
comp.run_stage = timed_step("apply (kept, _removed, markers, stats)", comp.run_stage)
shutil.rmtree(out, ignore_errors=True)
layout = RunLayout(str(out), "run")
t = time.process_time()
summary = comp.run_dedup(
    layout.stage("dedup"), "run", list(enumerate(sorted(shards))), CurateConfig(stages=["dedup"]), SerialExecutor(),
    keep_work=True,
)
total = time.process_time() - t
work = Path(layout.stage("dedup").dir) / "_work"
files = {d.name: sum(1 for f in d.rglob("*") if f.is_file()) for d in sorted(work.iterdir()) if d.is_dir()}
steps["driver (plan, hand-out, summary)"] = total - sum(steps.values())
print("RESULT " + json.dumps({
    "startup_cpu_s": startup,
    "startup_total_cpu_s": round(sum(v for k, v in startup.items() if not k.startswith("[")), 3),
    "step_cpu_s": {k: round(v, 3) for k, v in steps.items()}, "steps_total_cpu_s": round(total, 3),
    "partitions": summary["dedup"]["partitions"], "work_files": files,
}))
"""


def breakdown(shards: list[str], out_dir: Path) -> dict:
    """Where a serial whole dedup's CPU goes, in a fresh interpreter (module docstring, 4)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _BREAKDOWN, json.dumps(shards), str(out_dir), str(harness.REPO)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT ")).split(" ", 1)[1])


def signature_rates(shards: list[str], text_bytes: int) -> list[dict]:
    rows = []
    for name in VARIANTS:
        conditions = [("cached", None)]
        if "numba" in name or name == "mixforge":
            conditions.append(("compiling", tempfile.mkdtemp(prefix="numba-cache-")))
            conditions.reverse()  # compile first: the cached run then finds a warm disk cache
        for cond, cache_dir in conditions:
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            if cache_dir:
                env["NUMBA_CACHE_DIR"] = cache_dir
            with harness.timed() as t:
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, name, json.dumps(shards), str(harness.REPO)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                ).stdout
            r = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT ")).split(" ", 1)[1])
            row = {
                "variant": name,
                "cache": cond,
                "cold_cpu_s": round(r["cold"], 3),
                "warm_cpu_s": round(r["warm"], 3),
                "cold_mb_per_cpu_s": round(text_bytes / 1e6 / r["cold"], 1),
                "warm_mb_per_cpu_s": round(text_bytes / 1e6 / r["warm"], 1),
                "others_busy_cores": t["others_busy_cores"],
                "load": harness.loadavg(),
            }
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def truth_groups(shards: list[str]) -> dict[str, str]:
    """Document id -> its planted group (the original's id)."""
    import pyarrow.parquet as pq

    parent = {}
    for p in shards:
        t = pq.read_table(p, columns=["id", "near_copy_of"]).to_pydict()
        parent.update({i: (o or i) for i, o in zip(t["id"], t["near_copy_of"])})

    def root(i: str) -> str:
        while parent[i] != i:
            i = parent[i]
        return i

    return {i: root(i) for i in parent}


def score(groups: dict[str, str], removed: dict[str, str]) -> dict:
    planted = sum(1 for i, g in groups.items() if i != g)
    right = sum(1 for r, keeper in removed.items() if groups[r] == groups[keeper])
    return {
        "removed": len(removed),
        "right": right,
        "planted": planted,
        "precision": round(right / len(removed), 4) if removed else None,
        "recall": round(right / planted, 4) if planted else None,
    }


def run_ours(shards: list[str], out_root: Path, workers: int) -> dict:
    """The dedup composite in bare processes; CPU of the tree (and of the driver and each worker), peak RSS
    per worker, removals."""
    import shutil
    import time

    import pyarrow.parquet as pq

    from benchmarks.bench_dedup import _proc_status
    from mixforge.config import CurateConfig
    from mixforge.runs import RunLayout
    from mixforge.stages.registry import get_stage

    shutil.rmtree(out_root, ignore_errors=True)
    config = CurateConfig(stages=["dedup"], ray={"num_cpus": workers})
    inputs = list(enumerate(sorted(shards)))
    with harness.BarePool(workers, imports=("mixforge.dedup.composite",)) as pool:
        workers_before = {pid: harness.pids_cpu_seconds([pid]) for pid in pool.pids}
        driver_before = time.process_time()
        with harness.timed() as t:
            summary = get_stage("dedup").run(RunLayout(str(out_root), "run"), inputs, config, pool.executor())
        driver_cpu = time.process_time() - driver_before
        worker_cpu = [round(harness.pids_cpu_seconds([pid]) - workers_before[pid], 2) for pid in pool.pids]
        worker_hwm = {pid: _proc_status(pid).get("VmHWM", 0) for pid in pool.pids}  # the peak of each, in kB
    removed = {}
    for p in sorted(out_root.rglob("_removed/*.parquet")):
        r = pq.read_table(p, columns=["id", "duplicate_of"]).to_pydict()
        removed.update(zip(r["id"], r["duplicate_of"]))
    return {
        "seconds": round(t["seconds"], 2),
        "cpu_seconds": t["cpu_seconds"],
        "driver_cpu_s": round(driver_cpu, 2),
        "worker_cpu_s": worker_cpu,
        "partitions": summary["dedup"]["partitions"],
        "others_busy_cores": t["others_busy_cores"],
        "docs_in": summary["docs_in"],
        "docs_kept": summary["docs_kept"],
        "worker_peak_rss_mb": round(max(worker_hwm.values(), default=0) / 1024, 1),
        "_removed": removed,
    }


def main() -> None:
    harness.configure_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="1", help="realistic corpus scales for the whole dedup (1,2,4)")
    ap.add_argument("--base-mb", type=float, default=16.0, help="MB of text at scale 1")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work-dir", default=os.path.join(harness.DEFAULT_WORK_DIR, "minhash"))
    ap.add_argument("--corpus-work-dir", default=os.path.join(harness.DEFAULT_WORK_DIR, "realistic"))
    ap.add_argument("--datatrove-python", default="/tmp/dt-venv/bin/python")
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-signatures", action="store_true")
    ap.add_argument("--datatrove-scales", default=None, help="scales datatrove runs at (default: every scale)")
    ap.add_argument("--breakdown", action="store_true", help="also each scale's serial CPU breakdown by step")
    ap.add_argument("--json-out", default=str(harness.REPO / "benchmarks" / "out" / "minhash" / "result.json"))
    args = ap.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    work = Path(args.work_dir)
    corpora = {s: build_realistic_corpus(args.corpus_work_dir, scale=s, base_mb=args.base_mb) for s in scales}
    c1 = corpora[scales[0]]
    doc: dict = {"benchmark": "minhash-kernels", "params": vars(args), "environment": harness.environment()}
    doc["corpus"] = {
        s: {"docs": c.docs, "text_mb": round(c.text_bytes / 1e6, 2), "shards": len(c.shards)}
        for s, c in corpora.items()
    }
    if not args.skip_signatures:
        doc["signatures"] = signature_rates(c1.shards, c1.text_bytes)
    doc["dedup"] = []
    for s, c in corpora.items():
        groups = truth_groups(c.shards)
        res = run_ours(c.shards, work / f"ours-{s}x", args.workers)
        res["score"] = score(groups, res.pop("_removed"))
        if args.breakdown:
            res["breakdown"] = breakdown(c.shards, work / f"breakdown-{s}x")
        res.update(
            scale=s,
            shards=len(c.shards),
            text_mb=round(c.text_bytes / 1e6, 2),
            cpu_s_per_shard=round(res["cpu_seconds"] / len(c.shards), 3),
            mb_per_cpu_s=round(c.text_bytes / 1e6 / res["cpu_seconds"], 1),
            load=harness.loadavg(),
        )
        print(json.dumps(res), file=sys.stderr, flush=True)
        doc["dedup"].append(res)
    if not args.skip_datatrove:
        from benchmarks.bench_dedup import run_datatrove

        dt_scales = [int(x) for x in args.datatrove_scales.split(",")] if args.datatrove_scales else scales
        doc["datatrove_by_scale"] = []
        for s in dt_scales:
            c = corpora[s]
            dt = run_datatrove(args.datatrove_python, {"shards": c.shards}, work / f"datatrove-{s}x", args.workers)
            dt.pop("_clusters")
            dt["score"] = score(truth_groups(c.shards), dt.pop("_removed"))
            ours = next(r for r in doc["dedup"] if r["scale"] == s)
            dt.update(
                scale=s,
                load=harness.loadavg(),
                datatrove_over_ours_cpu=round(dt["cpu_seconds"] / ours["cpu_seconds"], 2),
                datatrove_over_ours_wall=round(dt["seconds"] / ours["seconds"], 2),
            )
            print(json.dumps(dt), file=sys.stderr, flush=True)
            doc["datatrove_by_scale"].append(dt)
        first = doc["datatrove_by_scale"][0]  # the figures of earlier reports: the first scale
        doc["datatrove"] = first
        doc["datatrove_over_ours_cpu"] = first["datatrove_over_ours_cpu"]
        doc["datatrove_over_ours_wall"] = first["datatrove_over_ours_wall"]
    doc["load_at_end"] = harness.loadavg()
    print(format_report(doc))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(doc, indent=2, default=str))


def format_report(doc: dict) -> str:
    out = [
        f"== MinHash kernels (realistic corpus) ==  corpus {doc['corpus']}  "
        f"load at start {doc['environment'].get('loadavg_at_start')}"
    ]
    rows = doc.get("signatures", [])
    if rows:
        out.append(f"{'signatures + exact hashes':34} {'cache':10} {'cold MB/CPU-s':>14} {'warm MB/CPU-s':>14}  load")
        for r in rows:
            out.append(
                f"{r['variant']:34} {r['cache']:10} {r['cold_mb_per_cpu_s']:>14} {r['warm_mb_per_cpu_s']:>14}  "
                f"{r['load']}"
            )
    for r in doc.get("dedup", []):
        out.append(
            f"whole dedup {r['scale']}x: {r['shards']} shards {r['text_mb']} MB  {r['cpu_seconds']} CPU-s "
            f"({r['cpu_s_per_shard']} per shard, {r['mb_per_cpu_s']} MB/CPU-s; driver {r['driver_cpu_s']}, "
            f"workers {r['worker_cpu_s']})  wall {r['seconds']} s  {r['partitions']} partition(s)  "
            f"worker peak RSS {r['worker_peak_rss_mb']} MB  P {r['score']['precision']} R {r['score']['recall']}  "
            f"load {r['load']}"
        )
        b = r.get("breakdown")
        if b:
            out.append(f"  serial, start-up {b['startup_total_cpu_s']} CPU-s: {b['startup_cpu_s']}")
            out.append(
                f"  serial, steps {b['steps_total_cpu_s']} CPU-s: {b['step_cpu_s']}  work files {b['work_files']}"
            )
    for d in doc.get("datatrove_by_scale", []):
        out.append(
            f"datatrove {d['scale']}x: {d['cpu_seconds']} CPU-s  wall {d['seconds']} s  P {d['score']['precision']} "
            f"R {d['score']['recall']}  -> datatrove/ours CPU {d['datatrove_over_ours_cpu']}x, "
            f"wall {d['datatrove_over_ours_wall']}x  load {d['load']}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
