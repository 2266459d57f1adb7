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
   process tree) against datatrove's MinHash (bench_dedup.run_datatrove), scored on the planted
   near-copies: a removed document is right when it was removed in favour of a document of its own
   planted group; recall = right removals / planted copies.
3. At each of --scales: whole dedup CPU seconds per shard and per MB, and the peak RSS per worker.
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
    """The dedup composite in bare processes; CPU of the tree, peak RSS per worker, removals."""
    import shutil

    import pyarrow.parquet as pq

    from benchmarks.bench_dedup import ProcSampler, descendants_selector
    from mixforge.config import CurateConfig
    from mixforge.runs import RunLayout
    from mixforge.stages.registry import get_stage

    shutil.rmtree(out_root, ignore_errors=True)
    config = CurateConfig(stages=["dedup"], ray={"num_cpus": workers})
    inputs = list(enumerate(sorted(shards)))
    with harness.BarePool(workers, imports=("mixforge.dedup.composite",)) as pool:
        with ProcSampler(descendants_selector(os.getpid())) as sampler, harness.timed() as t:
            summary = get_stage("dedup").run(RunLayout(str(out_root), "run"), inputs, config, pool.executor())
        worker_hwm = {pid: v for pid, v in sampler.hwm.items() if pid in pool.pids}
    removed = {}
    for p in sorted(out_root.rglob("_removed/*.parquet")):
        r = pq.read_table(p, columns=["id", "duplicate_of"]).to_pydict()
        removed.update(zip(r["id"], r["duplicate_of"]))
    return {
        "seconds": round(t["seconds"], 2),
        "cpu_seconds": t["cpu_seconds"],
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

        corpus = {"shards": c1.shards}
        dt = run_datatrove(args.datatrove_python, corpus, work / "datatrove", args.workers)
        dt.pop("_clusters")
        dt["score"] = score(truth_groups(c1.shards), dt.pop("_removed"))
        dt["load"] = harness.loadavg()
        doc["datatrove"] = dt
        ours = doc["dedup"][0]
        doc["datatrove_over_ours_cpu"] = round(dt["cpu_seconds"] / ours["cpu_seconds"], 2)
        doc["datatrove_over_ours_wall"] = round(dt["seconds"] / ours["seconds"], 2)
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
            f"({r['cpu_s_per_shard']} per shard, {r['mb_per_cpu_s']} MB/CPU-s)  wall {r['seconds']} s  "
            f"worker peak RSS {r['worker_peak_rss_mb']} MB  P {r['score']['precision']} R {r['score']['recall']}  "
            f"load {r['load']}"
        )
    if doc.get("datatrove"):
        d = doc["datatrove"]
        out.append(
            f"datatrove 1x: {d['cpu_seconds']} CPU-s  wall {d['seconds']} s  P {d['score']['precision']} "
            f"R {d['score']['recall']}  -> datatrove/ours CPU {doc['datatrove_over_ours_cpu']}x, "
            f"wall {doc['datatrove_over_ours_wall']}x  load {d['load']}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
