"""Mixture planning and drawing over a pool of >= 1M documents, against a plain read + write.

    .venv/bin/python -m benchmarks.bench_mix                      # 1M documents in 8 shards
    .venv/bin/python -m benchmarks.bench_mix --docs 250000 --json-out /tmp/mix.json

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
   (no shuffle, no repeats bookkeeping), with pyarrow, in the driver; and the same plain loop in
   --workers bare processes (the pool ceiling, harness.BarePool);
6. reports the driver's peak RSS after planning and after writing (worker processes excluded):
   run it at two --docs to see that it stays flat as the pool grows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_mix.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks import harness  # noqa: E402

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


def selected_rows(plan, out_dir: Path) -> list[tuple[str, np.ndarray, str]]:
    """(pool shard, the rows the plan draws from it, output file) per shard: the baseline's work list."""
    from mixforge.mixtures import shard_steps as W
    from mixforge.mixtures.pool import output_schema

    phases, offset = [], 0
    for p in plan.phases:
        phases.append({"name": p.name, "file_offset": offset, "n_files": p.n_files, "selections": p.selections})
        offset += p.n_files
    tasks = []
    for ref in plan.refs:  # which rows (not timed: the plan's business)
        job = W.DrawJob(ref, plan.view, tuple(phases), 1, output_schema(plan.shards), "")
        rows = np.sort(W.drawn_rows(job, W.load(plan.view, ref))["row"])
        tasks.append((plan.shards[ref.index].uri, rows, str(out_dir / f"part-{ref.index:05d}.parquet")))
    return tasks


def write_selected(task: tuple[str, np.ndarray, str]) -> int:
    """The plain loop over one pool shard: read it, take the selected rows, write them (no shuffle)."""
    uri, rows, out = task
    picked = pq.read_table(uri).take(pa.array(rows))
    pq.write_table(picked, out, compression="zstd")
    return picked.num_rows


SHUFFLE_CEILING = f"{harness.CEILING}:shuffle"


def scatter_selected(task: tuple[str, np.ndarray, str]) -> int:
    """The first pass of the plain shuffle loop over one pool shard: read it, take the selected rows, give
    each a random key and write them as one scratch piece (lz4, as a build's scratch)."""
    uri, rows, out = task
    picked = pq.read_table(uri).take(pa.array(rows))
    keys = np.random.default_rng(len(rows)).random(picked.num_rows)
    pq.write_table(picked.append_column("_key", pa.array(keys)), out, compression="lz4")
    return picked.num_rows


def gather_pieces(task: tuple[list[str], str]) -> int:
    """The second pass: read every piece of one output file, order the rows by key, write the file."""
    pieces, out = task
    table = pa.concat_tables([pq.read_table(p) for p in pieces])
    table = table.take(pa.array(np.argsort(table.column("_key").to_numpy(), kind="stable"))).drop_columns(["_key"])
    pq.write_table(table, out, compression="zstd")
    return table.num_rows


def shuffle_loop(pool: harness.BarePool, tasks: list[tuple[str, np.ndarray, str]], out_dir: Path) -> int:
    """The plain two-pass shuffle a build does (scatter per pool shard, then gather the output file),
    with no orchestration: the ceiling of draw + write, which shuffles (the plain loop above does not)."""
    pieces = [(uri, rows, str(out_dir / f"piece-{i:05d}.parquet")) for i, (uri, rows, _) in enumerate(tasks)]
    sum(pool.imap_unordered(scatter_selected, pieces))
    return sum(pool.imap_unordered(gather_pieces, [([p[2] for p in pieces], str(out_dir / "part-00000.parquet"))]))


def main() -> None:
    harness.configure_environment()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_run_args(p, repeat=None, work_dir="/tmp/mixforge-bench-mix", corpus_dir=False)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--fraction", type=float, default=0.5, help="budget as a fraction of the pool's tokens")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from mixforge.mixtures import build as B
    from mixforge.mixtures import versions as V
    from mixforge.mixtures.plan import plan_mixture
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
    with contextlib.ExitStack() as stack:
        # Arrow keeps its threads in these workers, as before the harness (initializer=None)
        pool = None
        if args.workers > 0:
            imports = ("mixforge.mixtures.shard_steps",)  # warm, so planning is timed without them
            pool = stack.enter_context(harness.BarePool(args.workers, initializer=None, imports=imports))
        executor = harness.counting_executor(calls, pool and pool.pool)
        rss_start = harness.PeakRSS.mb()

        t = time.perf_counter()
        shards = B.resolve_pool(spec.pool)
        B.count_tokens(spec, shards, executor)
        count_first = time.perf_counter() - t

        # the measured run: plan (aggregates only), then draw + write
        calls.clear()
        t0 = time.perf_counter()
        shards = B.resolve_pool(spec.pool)
        sidecars = B.count_tokens(spec, shards, executor)  # cached sidecars
        t1 = time.perf_counter()
        plan = plan_mixture(spec, shards, sidecars, executor)
        t2 = time.perf_counter()
        rss_plan = harness.PeakRSS.mb()
        plan_calls = {k: v for k, v in calls.items() if k != "count_shard"}
        files = B.write_data(plan, executor)
        t3 = time.perf_counter()
        version, _ = V.commit(spec.store, spec.name, B.manifest_body(plan, files, V.now()), None)
        t4 = time.perf_counter()
        rss_write = harness.PeakRSS.mb()
        rows = sum(f["rows"] for f in files)
        text_bytes = 0  # the benchmark reads no text size: rates are rows/s
        ceiling = shuffle_ceiling = None
        if pool is not None:
            tasks = selected_rows(plan, work / harness.CEILING)
            ceiling = pool.measure(
                harness.CEILING,
                write_selected,
                tasks,
                text_bytes=text_bytes,
                out_dir=work / harness.CEILING,
                description=f"the baseline loop in {args.workers} bare processes",
            )
            shuffle_dir = work / SHUFFLE_CEILING
            shuffle_ceiling = harness.measure(
                SHUFFLE_CEILING,
                lambda: shuffle_loop(pool, tasks, shuffle_dir),
                text_bytes=text_bytes,
                out_dir=shuffle_dir,
                workers=args.workers,
                description=f"the same two-pass shuffle (scatter per shard, gather, sort by key) in {args.workers} "
                "bare processes",
            )
    tasks = selected_rows(plan, work / "baseline")
    base = harness.measure(
        "baseline",
        lambda: sum(write_selected(task) for task in tasks),
        text_bytes=text_bytes,
        out_dir=work / "baseline",
        description="plain read of each pool shard + write of the rows the plan draws from it, in the driver",
    )
    base_s = base.seconds

    def row(name: str, seconds: float, description: str) -> harness.Measurement:
        return harness.Measurement(name, rows, text_bytes, seconds, rss_write, description=description)

    draw_and_write = row(
        "ours:draw_and_write", t3 - t2, f"draw + scatter + gather + write, {args.workers} worker processes"
    )
    if shuffle_ceiling is not None:
        draw_and_write.ceiling = SHUFFLE_CEILING  # compared with the loop that does the same work
    results = [
        base,
        *([ceiling, shuffle_ceiling] if ceiling else []),
        row("ours:plan", t2 - t0, "resolve the pool, cached token counts, plan (aggregates only)"),
        draw_and_write,
        row("ours:plan+write+commit", t4 - t0, "the whole mixture build: plan, write, commit with its card"),
    ]
    for m in results:
        if m.docs != base.docs:
            raise AssertionError(f"{m.name}: {m.docs} rows, the mixture has {base.docs}")

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
    extra = {
        "pool_docs": plan.pool_docs,
        "pool_shards": len(shards),
        "pool_tokens": plan.pool_tokens,
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
            "baseline_read_write_selected": round(base_s, 2),
        },
        "planning_rounds": plan_calls,
        # time ratios (lower is better), as published before the harness; the table's are their inverse
        "ratio_plan_vs_baseline": round((t2 - t0) / base_s, 3),
        "ratio_write_vs_baseline": round((t3 - t2) / base_s, 3),
        "driver_peak_rss_mb": {
            "after_imports": round(rss_start),
            "after_plan": round(rss_plan),
            "after_write_and_commit": round(rss_write),
            "after_baseline_in_driver": round(harness.PeakRSS.mb()),
        },
        "groups": groups,
        "version": version,
        "max_share_gap_pp": round(max(abs(g["realised_share"] - g["target_share"]) for g in groups) * 100, 4),
    }
    harness.report(
        results,
        "baseline",
        benchmark="mix",
        params={"docs": args.docs, "shards": args.shards, "fraction": args.fraction, "workers": args.workers},
        extra=extra,
        notes=[
            "docs/s = mixture rows over seconds for every row (the baseline writes the same rows), so vs baseline "
            "is the inverse of extra.ratio_*_vs_baseline; MB/s is not measured (0)",
            "peak RSS of ours rows = the driver's after write and commit (worker processes excluded)",
        ],
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
