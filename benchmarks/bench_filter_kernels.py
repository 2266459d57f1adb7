#!/usr/bin/env python
r"""Benchmark (#20): the four heuristic rule sets in MB of text per CPU-second on the realistic corpus,
cold and warm tokenizer caches, beside the lean reference kernel and datatrove, one run.

    .venv/bin/python -m benchmarks.bench_filter_kernels --datatrove-python /tmp/dt-venv/bin/python
    .venv/bin/python -m benchmarks.bench_filter_kernels --scales 1 --no-orchestration   # quick, ours only

Corpus: `benchmarks.realistic_corpus` (every document once, --scale x 16 MB), normalised as in a run
(mixforge's normalize stage), cached under --work-dir. Per shard, in --workers bare processes (one
thread each; POLARS_MAX_THREADS=1), CPU seconds (`time.process_time`) of:

* `lean`: `benchmarks.lean_filters.lean_features` (the yardstick);
* `ours-cold`: gopher_repetition, gopher_quality, fineweb_quality, c4 on one shared `TextBatch` (words,
  lines computed once), the first time this worker sees the shard: the tokenizer's cache holds only
  what earlier shards of this worker put there, as in a run over unseen text; the compiled tokenizer is
  loaded once per worker before (`tokenizer_load`, as a rule set's `setup` does in a run), and
  `ours_cold_with_load` counts that load too;
* `ours-warm`: the same, again (every distinct chunk cached);
* `stage-now-warm`: the Filter stage as it is (annotate mode, a new TextBatch per rule set), warm caches:
  compare with `ours-warm`;
* `lid`: language ID (lid.176) over the shard.

datatrove (own venv, `benchmarks/bench_filter.py`'s worker, 2 processes) runs the same rule sets and
language ID over the JSONL copies of (every k-th of) the shards; the agreement table compares the
keep/drop verdict of each rule set per document. `--scales`: per-shard cost of the whole default
filter stage through the shard runner (read, filter, write, markers) against its compute alone (both
after a warm-up pass over the same shards in the same processes), and
peak RSS per worker, at each scale, in a fresh pool per scale. The load average is recorded beside
every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

RULES = ("gopher_repetition", "gopher_quality", "fineweb_quality", "c4")


def _load() -> list[float] | None:
    return harness.loadavg()


def normalized_shards(corpus: harness.Corpus, out: Path) -> tuple[list[str], list[str], list[int]]:
    """Parquet and JSONL copies of the corpus shards after the normalize stage (cached), and their text bytes."""
    import pyarrow.parquet as pq

    from mixforge.stage import ShardContext
    from mixforge.stages.normalize import Normalize

    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "_source.json"
    source = json.dumps([corpus.shards, corpus.text_bytes])
    parquet, jsonl, sizes = [], [], []
    fresh = not stamp.exists() or stamp.read_text() != source
    for k, path in enumerate(corpus.shards):
        pq_path, js_path = out / f"shard-{k:05d}.parquet", out / f"shard-{k:05d}.jsonl"
        if fresh or not pq_path.exists():
            table = pq.read_table(path, columns=["id", "text", "url"])
            table = Normalize().process(table, ShardContext(str(path), k)).kept
            pq.write_table(table, pq_path)
            with open(js_path, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        parquet.append(str(pq_path))
        jsonl.append(str(js_path))
        sizes.append(sum(len(t.encode("utf-8")) for t in pq.read_table(pq_path, columns=["text"])["text"].to_pylist()))
    stamp.write_text(source)
    return parquet, jsonl, sizes


# ----------------------------------------------------------------------------- per shard, in a worker


def _kernel_shard(task) -> dict:
    os.environ["POLARS_MAX_THREADS"] = "1"
    path, verdict_path, with_lid = task
    import pyarrow.parquet as pq

    from benchmarks.lean_filters import lean_features
    from mixforge.filters import (
        C4Quality,
        FineWebQuality,
        GopherQuality,
        GopherRepetition,
        LanguageID,
        LanguageIDConfig,
        TextBatch,
    )
    from mixforge.stage import ShardContext
    from mixforge.stages.filter import Filter

    global _STATE
    load_s = 0.0
    if "_STATE" not in globals():
        from mixforge.filters.text import load_tokenizer

        t0 = time.process_time()
        load_tokenizer()  # once per worker (numba's disk cache and the pattern tables): reported, not in `cold`
        load_s = time.process_time() - t0
        from benchmarks.bench_filter import heuristics_config

        stage = Filter(heuristics_config(), write_features=False)
        stage.setup()
        lid = LanguageID(LanguageIDConfig())
        lid.setup()
        _STATE = {"rules": [GopherRepetition(), GopherQuality(), FineWebQuality(), C4Quality()], "stage": stage}
        _STATE["lid"] = lid
    table = pq.read_table(path)
    text = table.column("text").combine_chunks()

    def cpu(fn):
        t = time.process_time()
        out = fn()
        return time.process_time() - t, out

    def ours():
        batch = TextBatch(text)
        return {rs.name: rs.evaluate_batch(batch) for rs in _STATE["rules"]}

    out = {"docs": table.num_rows, "load_start": _load(), "tokenizer_load_s": load_s}
    out["lean_s"], _ = cpu(lambda: lean_features(text))
    out["ours_cold_s"], evs = cpu(ours)
    out["ours_warm_s"], _ = cpu(ours)
    out["stage_now_s"], _ = cpu(lambda: _STATE["stage"].process(table, ShardContext(path, 0)))
    out["lid_s"], lid_ev = cpu(lambda: _STATE["lid"].evaluate_batch(TextBatch(text))) if with_lid else (0.0, None)
    ids = table.column("id").to_pylist()
    first = {name: ev.first_failure() for name, ev in evs.items()}
    with open(verdict_path, "w") as f:
        for i, doc_id in enumerate(ids):
            row = {"id": doc_id, **{r: first[r][i] for r in RULES}}
            if lid_ev is not None:
                row["lang"] = lid_ev.features["lang"][i]
                row["lang_fail"] = bool(lid_ev.fails["lang"][i])
            f.write(json.dumps(row) + "\n")
    out["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_end"] = _load()
    return out


def _stage_compute(path: str) -> dict:
    """The default filter stage's compute over one shard (read and process, nothing written)."""
    os.environ["POLARS_MAX_THREADS"] = "1"
    import pyarrow.parquet as pq

    from mixforge.filters import FilterConfig, LanguageIDConfig
    from mixforge.stage import ShardContext
    from mixforge.stages.filter import Filter

    t = time.process_time()
    Filter(FilterConfig(language_id=LanguageIDConfig(enabled=False))).process(
        pq.read_table(path), ShardContext(path, 0)
    )
    return {"cpu_s": time.process_time() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def orchestration(scale: int, args, work: Path) -> dict:
    """Per-shard cost of the shard runner (read, filter, write kept and _removed, markers, stats) over the
    stage's compute alone, and peak RSS per worker, in a fresh pool."""
    from benchmarks.realistic_corpus import build_realistic_corpus
    from mixforge.filters import FilterConfig, LanguageIDConfig
    from mixforge.runner import run_stage
    from mixforge.runs import StageLayout
    from mixforge.stages.filter import Filter

    corpus = build_realistic_corpus(work / "corpus", scale, args.seed)
    parquet, _, sizes = normalized_shards(corpus, work / f"normalized-{scale}x")
    stage = Filter(FilterConfig(language_id=LanguageIDConfig(enabled=False)))
    inputs = [(i, p) for i, p in enumerate(parquet)]
    with harness.BarePool(args.workers, imports=("mixforge.runner", "mixforge.stages.filter")) as pool:
        load = _load()
        list(pool.imap_unordered(_stage_compute, parquet))  # warm-up: imports, tokenizer caches
        computed = list(pool.imap_unordered(_stage_compute, parquet))
        out_dir = work / f"runner-{scale}x"
        harness.fresh_dir(out_dir)
        with harness.timed() as t_runner:
            run_stage(stage, StageLayout(str(out_dir)), inputs, pool.executor())
    compute_cpu = sum(c["cpu_s"] for c in computed)
    n = len(parquet)
    return {
        "scale": scale,
        "shards": n,
        "mb": round(sum(sizes) / harness.MB, 2),
        "compute_cpu_s": round(compute_cpu, 2),
        "runner_cpu_s": t_runner["cpu_seconds"],
        "runner_wall_s": round(t_runner["seconds"], 2),
        "orchestration_cpu_s_per_shard": round((t_runner["cpu_seconds"] - compute_cpu) / n, 3)
        if t_runner["cpu_seconds"] is not None
        else None,
        "worker_peak_rss_mb": round(max(c["rss_mb"] for c in computed), 1),
        "load": load,
        "load_end": _load(),
    }


def main() -> None:
    harness.configure_environment()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_run_args(p, repeat=None, work_dir=os.path.join(harness.DEFAULT_WORK_DIR, "filter-kernels"))
    p.add_argument("--scale", type=int, default=1, help="corpus scale of the throughput figures (x 16 MB)")
    p.add_argument("--scales", default="1,2,4", help="scales of the orchestration and memory figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-orchestration", action="store_true")
    p.add_argument("--no-lid", action="store_true")
    p.add_argument("--datatrove-python", default=None)
    p.add_argument("--datatrove-max-mb", type=float, default=8.0, help="datatrove on every k-th shard, ~this many MB")
    args = p.parse_args()
    from benchmarks import bench_filter
    from benchmarks.realistic_corpus import build_realistic_corpus

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_realistic_corpus(work / "corpus", args.scale, args.seed)
    parquet, jsonl, sizes = normalized_shards(corpus, work / f"normalized-{args.scale}x")
    with_lid = not args.no_lid
    vdir = work / "verdicts-ours"
    harness.fresh_dir(vdir)
    tasks = [(pq, str(vdir / (Path(pq).stem + ".jsonl")), with_lid) for pq in parquet]
    load_before = _load()
    with harness.BarePool(args.workers) as pool:
        shards = list(pool.imap_unordered(_kernel_shard, tasks))
    mb = sum(sizes) / harness.MB
    keys = ("lean_s", "ours_cold_s", "ours_warm_s", "stage_now_s", "lid_s", "tokenizer_load_s")
    total = {k: sum(s[k] for s in shards) for k in keys}
    result: dict = {
        "corpus": {
            "scale": args.scale,
            "docs": sum(s["docs"] for s in shards),
            "mb": round(mb, 2),
            "shards": len(parquet),
        },
        "load_before": load_before,
        "load_after": _load(),
        "cpu_s": {k: round(v, 2) for k, v in total.items()},
        "mb_per_cpu_s": {
            k.removesuffix("_s"): round(mb / v, 2) for k, v in total.items() if v > 0 and k != "tokenizer_load_s"
        },
        "worker_peak_rss_mb": round(max(s["worker_peak_rss_mb"] for s in shards), 1),
    }
    r = result["mb_per_cpu_s"]
    # cold with each worker's one-off load of the compiled tokenizer counted too
    r["ours_cold_with_load"] = round(mb / (total["ours_cold_s"] + total["tokenizer_load_s"]), 2)
    result["ratios"] = {
        "lean_over_ours_cold_with_load": round(r["lean"] / r["ours_cold_with_load"], 2),
        "lean_over_ours_cold": round(r["lean"] / r["ours_cold"], 2),
        "lean_over_ours_warm": round(r["lean"] / r["ours_warm"], 2),
        "ours_warm_over_stage_now_warm": round(r["ours_warm"] / r["stage_now"], 2),
    }
    if args.datatrove_python:
        step = max(1, round(mb / args.datatrove_max_mb)) if args.datatrove_max_mb else 1
        chosen = list(range(0, len(jsonl), step))
        harness.fresh_dir(work / "verdicts-datatrove")
        dt = bench_filter.run_datatrove(
            args.datatrove_python, [jsonl[k] for k in chosen], work, [], args.workers, with_lid
        )
        dt_mb = sum(sizes[k] for k in chosen) / harness.MB
        result["datatrove"] = {
            "shards": len(chosen),
            "mb": round(dt_mb, 2),
            "mb_per_cpu_s": {
                "heuristics": round(dt_mb / dt["heuristics_s"], 3),
                "lid": round(dt_mb / dt["lid_s"], 3) if dt.get("lid_s") else None,
                "heuristics+lid": round(dt_mb / (dt["heuristics_s"] + dt.get("lid_s", 0.0)), 3),
            },
            "load_after": _load(),
        }
        d = result["datatrove"]["mb_per_cpu_s"]
        ours_whole = mb / (total["ours_cold_s"] + total["lid_s"])
        result["ratios"]["ours_cold_over_datatrove_heuristics"] = round(r["ours_cold"] / d["heuristics"], 2)
        result["ratios"]["ours_cold_over_datatrove_with_lid"] = round(ours_whole / d["heuristics+lid"], 2)
        agreement = bench_filter.compare(work)
        result["agreement"] = {k: {"docs": v["docs"], "agreement": v["agreement"]} for k, v in agreement.items()}
    if not args.no_orchestration:
        result["orchestration"] = [orchestration(int(s), args, work) for s in args.scales.split(",")]
    result["environment"] = harness.environment()
    text = json.dumps(result, indent=1, default=str)
    (work / "result.json").write_text(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
