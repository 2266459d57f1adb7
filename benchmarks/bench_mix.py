"""Mixture planning and drawing over a pool of >= 1M documents, against a plain read + write.

    .venv/bin/python benchmarks/bench_mix.py                      # 1M documents in 8 shards
    .venv/bin/python benchmarks/bench_mix.py --docs 250000 --json-out /tmp/mix.json

It:
1. generates a synthetic curated pool (contract Parquet with source, lang, domain, quality_score,
   dup_count; short texts) once, cached in --work-dir (in a child process);
2. counts tokens (tiktoken cl100k_base, cached as sidecars: reported separately, first and cached run);
3. times planning: per-shard aggregates (group stats, key histograms, the rows near each
   threshold) computed by --workers worker processes, the exact token plan in the driver; no text
   is read and the driver never holds pool rows;
4. times writing the mixture (draw + scatter per pool shard, gather per bucket of output files;
   text read only here), then the commit with its data card;
5. times the baseline: a plain read of every pool shard and a write of the same selected rows
   (no shuffle, no repeats bookkeeping), with pyarrow, in the driver;
6. reports the driver's peak RSS after planning and after writing (worker processes excluded):
   run it at two --docs to see that it stays flat as the pool grows.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

WORDS = (
    "the of and to in a is that for it as with was on be by this are from or at an have not but "
    "river garden village letter window harbour mountain teacher market evening winter candle forest "
    "bridge sailor kitchen meadow lantern journey orchard quiet bright ancient gentle narrow"
).split()


def make_pool(root: Path, docs: int, shards: int, seed: int) -> Path:
    pool = root / "runs" / f"run-bench-{docs}-{shards}-{seed}" / "dedup"
    marker = pool / "_complete"
    if marker.exists():
        return pool
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = np.array(WORDS, dtype=object)
    per = -(-docs // shards)
    sources = np.array(["web", "books", "code", "wiki"], dtype=object)
    for s in range(shards):
        n = min(per, docs - s * per)
        start = s * per
        lengths = rng.integers(8, 120, n)
        flat = words[rng.integers(0, len(words), int(lengths.sum()))]
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(chunk) for chunk in np.split(flat, cuts)]
        src = sources[rng.choice(4, n, p=[0.6, 0.2, 0.1, 0.1])]
        ids = [f"d{start + i}" for i in range(n)]
        table = pa.table(
            {
                "id": ids,
                "text": texts,
                "source": src.tolist(),
                "url": [f"https://example.org/{i}" for i in ids],
                "meta": pa.nulls(n, pa.string()),
                "lang": np.array(["en", "fr", "de"], dtype=object)[rng.choice(3, n, p=[0.7, 0.2, 0.1])].tolist(),
                "domain": np.array(["news", "science", "software"], dtype=object)[rng.integers(0, 3, n)].tolist(),
                "quality_score": rng.random(n).astype(np.float32),
                "dup_count": rng.choice([1, 1, 1, 2, 3, 8], n).astype(np.int32),
            }
        )
        pq.write_table(table, pool / f"part-{s:05d}.parquet", compression="zstd", row_group_size=65536)
    marker.write_text("ok")
    return pool


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def counting_executor(workers: int, calls_log: collections.Counter):
    """An Executor over `workers` worker processes (0: in the driver, serially) that counts the
    steps it runs, so what the driver holds is measured apart from the per-shard work; and the
    process pool to shut down (None when serial)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from mixforge.executor import Executor, SerialExecutor, format_error

    class CountingExecutor(Executor):
        def __init__(self, pool: cf.ProcessPoolExecutor | None) -> None:
            self.pool = pool

        def run(self, fn, calls, **kw):
            calls_log[fn.__name__] += 1
            if self.pool is None:
                yield from SerialExecutor().run(fn, calls, **kw)
                return
            futures = {self.pool.submit(fn, *c.args): c.label for c in calls}
            for f in cf.as_completed(futures):  # folded as they finish
                error = f.exception()
                yield futures[f], (None if error else f.result()), (format_error(error) if error else None)

    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) if workers > 0 else None
    return CountingExecutor(pool), pool


def baseline(plan, out_dir: Path) -> dict:
    """Plain read of each pool shard + write of the rows the plan draws from it (no shuffle)."""
    from mixforge.mixtures import shardwork as W
    from mixforge.mixtures.pool import output_schema

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    phases, offset = [], 0
    for p in plan.phases:
        phases.append({"name": p.name, "file_offset": offset, "n_files": p.n_files, "selections": p.selections})
        offset += p.n_files
    selected = {}
    for ref in plan.refs:  # which rows (not timed: the plan's business)
        job = W.DrawJob(ref, plan.ctx, tuple(phases), 1, output_schema(plan.shards), "")
        selected[ref.index] = np.sort(W.drawn_rows(job, W.load(plan.ctx, ref))["row"])
    t = time.perf_counter()
    rows = 0
    for s, shard in enumerate(plan.shards):
        table = pq.read_table(shard.uri)
        picked = table.take(pa.array(selected[s]))
        pq.write_table(picked, out_dir / f"part-{s:05d}.parquet", compression="zstd")
        rows += picked.num_rows
    return {"seconds": time.perf_counter() - t, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--fraction", type=float, default=0.5, help="budget as a fraction of the pool's tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/mixforge-bench-mix")
    p.add_argument("--workers", type=int, default=2, help="worker processes for the per-shard work (0: in the driver)")
    p.add_argument("--json-out")
    args = p.parse_args()

    from mixforge.mixtures import build as B
    from mixforge.mixtures import versions as V
    from mixforge.mixtures.spec import MixSpec

    work = Path(args.work_dir)
    t = time.perf_counter()
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as gen:  # keeps the driver's RSS clean
        pool = gen.submit(make_pool, work / "pool", args.docs, args.shards, args.seed).result()
    gen_s = time.perf_counter() - t
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    spec = MixSpec.model_validate(
        {
            "name": "bench",
            "pool": str(pool),
            "store": str(store),
            "seed": 1,
            "budget_fraction": args.fraction,
            "output": {"shard_tokens": 8_000_000},
            "groups": [
                {
                    "name": "web-en",
                    "where": {"source": "web", "lang": "en"},
                    "weight": 0.4,
                    "sampling": {"method": "quality", "column": "quality_score", "temperature": 0.3},
                },
                {
                    "name": "web-other",
                    "where": {"source": "web"},
                    "weight": 0.2,
                    "sampling": {"method": "rehydrate"},
                    "max_epochs": 2,
                },
                {"name": "books", "where": {"source": "books"}, "weight": 0.25, "max_epochs": 2},
                {"name": "rest", "where": {}, "weight": 0.15},
            ],
        }
    )
    calls: collections.Counter = collections.Counter()
    executor, process_pool = counting_executor(args.workers, calls)
    rss_start = peak_rss_mb()

    t = time.perf_counter()
    shards = B.resolve_pool(spec.pool)
    B.count_tokens(spec, shards, executor)
    count_first = time.perf_counter() - t
    if process_pool is not None:  # warm the workers' imports, so planning is timed without them
        executor.map(W_warm, [() for _ in range(args.workers)])

    # the measured run: plan (aggregates only), then draw + write
    calls.clear()
    t0 = time.perf_counter()
    shards = B.resolve_pool(spec.pool)
    sidecars = B.count_tokens(spec, shards, executor)  # cached sidecars
    t1 = time.perf_counter()
    plan = B.plan(spec, shards, sidecars, executor)
    t2 = time.perf_counter()
    rss_plan = peak_rss_mb()
    plan_calls = {k: v for k, v in calls.items() if k != "count_shard"}
    files = B.write_data(plan, executor)
    t3 = time.perf_counter()
    version, _ = V.commit(spec.store, spec.name, B.manifest_body(plan, files, V.now()), None)
    t4 = time.perf_counter()
    rss_write = peak_rss_mb()
    if process_pool is not None:
        process_pool.shutdown()
    base = baseline(plan, work / "baseline")

    groups = [
        {
            "group": g.name,
            "target_share": round(g.target_share, 5),
            "realised_share": round(g.realised_share, 5),
            "tokens": g.realised_tokens,
            "docs": g.realised_docs,
            "epochs": round(g.epochs, 3),
        }
        for g in plan.phases[0].groups
    ]
    rows = sum(f["rows"] for f in files)
    report = {
        "pool_docs": plan.pool_docs,
        "pool_shards": len(shards),
        "pool_tokens": plan.pool_tokens,
        "workers": args.workers,
        "mixture_rows": rows,
        "mixture_tokens": sum(f["tokens"] for f in files),
        "mixture_files": len(files),
        "seconds": {
            "generate_pool": round(gen_s, 2),
            "count_tokens_first": round(count_first, 2),
            "resolve_and_cached_counts": round(t1 - t0, 2),
            "plan": round(t2 - t1, 2),
            "plan_incl_resolve": round(t2 - t0, 2),
            "draw_and_write_mixture": round(t3 - t2, 2),
            "commit_and_card": round(t4 - t3, 2),
            "baseline_read_write_selected": round(base["seconds"], 2),
        },
        "planning_rounds": plan_calls,
        "ratio_plan_vs_baseline": round((t2 - t0) / base["seconds"], 3),
        "ratio_write_vs_baseline": round((t3 - t2) / base["seconds"], 3),
        "driver_peak_rss_mb": {
            "after_imports": round(rss_start),
            "after_plan": round(rss_plan),
            "after_write_and_commit": round(rss_write),
            "after_baseline_in_driver": round(peak_rss_mb()),
        },
        "groups": groups,
        "version": version,
        "max_share_gap_pp": round(max(abs(g["realised_share"] - g["target_share"]) for g in groups) * 100, 4),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


def W_warm() -> None:
    import mixforge.mixtures.shardwork  # noqa: F401


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    main()
