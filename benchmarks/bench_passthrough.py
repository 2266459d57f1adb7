#!/usr/bin/env python
"""Benchmark: what orchestration costs. A pass-through stage (read -> write) through Prefect + Ray
against a plain single-process, single-threaded pyarrow loop over the same shards, in one run.

    .venv/bin/python -m benchmarks.bench_passthrough                        # 8 shards x 50 MB, 2 workers
    .venv/bin/python -m benchmarks.bench_passthrough --shard-mb 5 --repeat 1  # quick
    .venv/bin/python -m benchmarks.bench_passthrough --json-out /tmp/passthrough.json

Variants (each over the same Parquet zstd shards, each writing fresh zstd Parquet):
  baseline        pa.set_cpu_count(1); ParquetFile.iter_batches(use_threads=False) -> ParquetWriter, shard after shard
  pool-ceiling    the same loop in --workers bare processes (harness.BarePool; no Prefect, no Ray): what
                  the machine allows, so the gap between it and `ours` is the orchestration's cost
  ours            PassThrough through a Prefect flow -> task -> tasks.stage_runner.run_stage on a local
                  Ray with --workers CPUs and --workers shards in flight (contract input: read_documents)
  ours-raw        the same with reads_raw=True: raw-input validation and normalisation (read_raw) too

Order: every baseline/pool repetition first, then Prefect and Ray start (timed, reported
separately, excluded from every figure), then the `ours` variants interleaved. Each variant runs
--repeat times (default 2); the fastest run is reported and all are listed. Timed from before the
first shard is opened to after the last output is closed (for `ours`: the whole flow run, so the
flow run's own fixed cost is included); output folders are emptied before each run, untimed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_passthrough.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

GOAL_RATIO = 1.6
BATCH_ROWS = 4096  # = mixforge ReadConfig().batch_rows, what `ours` reads with


def baseline_shard(task: tuple[str, str, int]) -> int:
    """Plain pyarrow: stream one shard's record batches into a zstd Parquet writer."""
    import pyarrow.parquet as pq

    src, dst, batch_rows = task
    rows = 0
    pf = pq.ParquetFile(src)
    with pq.ParquetWriter(dst, pf.schema_arrow, compression="zstd") as writer:
        for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False):
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def run_baseline(inputs: list[str], out_dir: str, text_bytes: int) -> harness.Measurement:
    return harness.measure(
        "baseline",
        lambda: sum(
            baseline_shard((src, os.path.join(out_dir, f"part-{i:05d}.parquet"), BATCH_ROWS))
            for i, src in enumerate(inputs)
        ),
        text_bytes=text_bytes,
        out_dir=out_dir,
        one_thread=True,
    )


def in_flow(m: harness.Measurement) -> harness.Measurement:
    """The same run timed inside the flow body: without the flow run's fixed enter/exit cost."""
    d = m.details
    return harness.Measurement(
        f"{m.name}:in-flow",
        m.docs,
        m.text_bytes,
        d["flow_body_seconds"],
        m.peak_rss_mb,
        m.worker_peak_rss_mb,
        machine_busy_cores=m.machine_busy_cores,
        others_busy_cores=m.others_busy_cores,
        cpu_seconds=m.cpu_seconds,
        details=dict(d),
    )


def breakdown(m: harness.Measurement, workers: int) -> dict:
    """Where one `ours` run's wall time went."""
    d = m.details
    return {
        "flow_run_s": d["flow_run_seconds"],
        "flow_enter_exit_s": round(d["flow_run_seconds"] - d["flow_body_seconds"], 3),
        "prefect_task_s": round(d["flow_body_seconds"] - d["run_stage_seconds"], 3),
        "run_stage_s": d["run_stage_seconds"],
        "shard_seconds_sum": d["shard_seconds_sum"],
        "worker_busy_fraction": round(d["shard_seconds_sum"] / (workers * d["run_stage_seconds"]), 3),
    }


def check_outputs(out_dir: str, expected_docs: int, pattern: str = "part-*.parquet") -> None:
    import pyarrow.parquet as pq

    n = sum(pq.ParquetFile(p).metadata.num_rows for p in Path(out_dir).glob(pattern))
    if n != expected_docs:
        raise AssertionError(f"{out_dir}: {n} rows written, expected {expected_docs}")


def main(argv: list[str] | None = None) -> int:
    harness.configure_environment()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_common_args(parser, repeat=3)
    parser.add_argument("--no-reference", action="store_true", help=f"skip the {harness.CEILING} variant")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="shards scheduled on Ray at once (default: the product's, 2 per worker CPU)",
    )
    args = parser.parse_args(argv)

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    work = Path(args.work_dir)
    corpus_dir = work / "corpus" / f"parquet-{args.shards}x{args.shard_mb:g}mb-seed{args.seed}"
    log(f"corpus: {corpus_dir} ...")
    corpus = harness.make_corpus(
        corpus_dir, args.shards, args.shard_mb, "parquet", args.seed, args.corpus_dir, rebuild=args.rebuild_corpus
    )
    log(
        f"corpus: {corpus.docs:,} docs, {corpus.text_bytes / harness.MB:.1f} MB text, "
        + ("cached" if corpus.cached else f"built in {corpus.build_seconds:.1f}s")
    )
    inputs, out = corpus.shards, work / "out"

    runs: dict[str, list[harness.Measurement]] = {}

    def record(m: harness.Measurement, out_dir: Path) -> None:
        check_outputs(str(out_dir), corpus.docs)
        runs.setdefault(m.name, []).append(m)
        extra = f", worker peak {m.worker_peak_rss_mb:.0f} MB" if m.worker_peak_rss_mb else ""
        log(
            f"  {m.name}: {m.seconds:.2f}s, {m.docs_per_s:,.0f} docs/s, {m.mb_per_s:.1f} MB/s, "
            f"peak RSS {m.peak_rss_mb:.0f} MB{extra}, "
            f"CPU {m.cpu_seconds}s, others' load {m.others_busy_cores} cores"
            + (f", details {m.details}" if m.details else "")
        )

    def references(pool, label: str) -> None:
        log(f"baseline, {label}")
        record(run_baseline(inputs, str(out / "baseline"), corpus.text_bytes), out / "baseline")
        if pool is not None:
            log(f"{harness.CEILING}, {label}")
            ceiling_out = out / harness.CEILING
            tasks = [(src, str(ceiling_out / f"part-{i:05d}.parquet"), BATCH_ROWS) for i, src in enumerate(inputs)]
            record(
                pool.measure(
                    harness.CEILING, baseline_shard, tasks, text_bytes=corpus.text_bytes, out_dir=ceiling_out
                ),
                ceiling_out,
            )

    from mixforge.stage import PassThrough

    class RawPassThrough(PassThrough):
        """PassThrough over raw input: every batch goes through read_raw's validation."""

        name = "passthrough_raw"
        reads_raw = True

    with contextlib.ExitStack() as stack:
        pool = None
        if not args.no_reference:
            pool = stack.enter_context(harness.BarePool(args.workers))
        references(pool, "before start-up (nothing else of ours running)")

        log("starting Prefect and Ray ...")
        with harness.Orchestration(args.workers, args.in_flight) as orch:
            log(
                "start-up: "
                + ", ".join(f"{k} {v:.2f}s" for k, v in orch.startup.items())
                + f"; a no-op flow run costs {orch.flow_run_overhead:.2f}s"
            )
            for r in range(args.repeat):
                label = f"round {r + 1}/{args.repeat}"
                references(pool, label)
                for name, stage in (("ours", PassThrough()), ("ours-raw", RawPassThrough())):
                    log(f"{name}, {label}")
                    record(orch.run_stage_flow(name, stage, inputs, str(out / name), corpus.text_bytes), out / name)
            startup, flow_overhead = orch.startup, orch.flow_run_overhead
    for name in ("ours", "ours-raw"):
        runs[f"{name}:in-flow"] = [in_flow(m) for m in runs[name]]

    descriptions = {
        "baseline": "1 process, 1 thread: ParquetFile.iter_batches -> ParquetWriter (zstd)",
        harness.CEILING: f"the baseline loop in {args.workers} bare processes, no orchestration",
        "ours": f"PassThrough, Prefect flow -> Ray, {args.workers} workers (read_documents)",
        "ours-raw": f"PassThrough reads_raw=True, Prefect flow -> Ray, {args.workers} workers (read_raw)",
        "ours:in-flow": "ours timed inside the flow body "
        "(Prefect task + Ray + shards; without the flow run's enter/exit)",
        "ours-raw:in-flow": "ours-raw timed inside the flow body",
    }
    results = [harness.best_of(name, ms) for name, ms in runs.items()]
    for m in results:
        m.description = descriptions[m.name]
    best = {m.name: m for m in results}
    notes = [
        f"baseline and {harness.CEILING} ran once before start-up and once per round after it; "
        "ours/ours-raw once per round "
        f"({args.repeat} rounds); fastest run reported, all runs listed",
        "seconds exclude start-up; ours/ours-raw span the whole flow run (its fixed enter/exit cost included), "
        ":in-flow rows do not",
        "peak RSS MB = driver process during the timed part; worker peak = largest Ray worker (ours only)",
        "CPU s = CPU seconds of this benchmark's process tree during the run "
        "(driver, pool or Ray workers and daemons, Prefect server)",
        "others' cores = CPU cores used meanwhile by processes outside this benchmark's process tree "
        "(noise indicator)",
    ]
    harness.report(
        results,
        "baseline",
        benchmark="passthrough",
        params={
            "shards": args.shards,
            "shard_mb": args.shard_mb,
            "workers": args.workers,
            "in_flight": args.in_flight or f"{2 * args.workers} (RayConfig default: 2 per CPU)",
            "repeat": args.repeat,
            "batch_rows": BATCH_ROWS,
        },
        corpus=corpus,
        startup=startup,
        notes=notes,
        json_out=args.json_out,
        print_json=args.json,
        goals=[(name, GOAL_RATIO) for name in ("ours", "ours-raw", "ours:in-flow", "ours-raw:in-flow")],
        extra={
            "noop_flow_run_seconds": round(flow_overhead, 3),
            "ours breakdown (fastest run)": breakdown(best["ours"], args.workers),
            "ours-raw breakdown (fastest run)": breakdown(best["ours-raw"], args.workers),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
