"""Export benchmark (issue #17): tokens/s per core of the whole export against datatrove and bare `tokenizers`.

    .venv/bin/python -m benchmarks.bench_export --repeat 3 --profile              # 16 MB version, scales 1,2,4
    .venv/bin/python -m benchmarks.bench_export --mb 2 --scale 1,2 --skip-datatrove  # quick check
    .venv/bin/python -m benchmarks.bench_export --json-out /tmp/export.json

Set-up (untimed, cached in --work-dir):
1. a Hugging Face byte-level BPE tokenizer (--vocab, 32k) trained on the text of --corpus-dir
   (../shared/corpus) and saved as tokenizer.json, `<|endoftext|>` its EOS (datatrove's tokenizer
   only takes HF tokenizers, so both sides use this one file);
2. a pool of ~--mb MB of that text (`harness.make_corpus`, 4 Parquet shards) and, per --scale s, a
   mixture version of it (`spec_for_pool`, one group per source, temperature 1) with budget s x the
   pool and max_epochs s: the 2x and 4x versions hold every document 2 and 4 times (repeats are
   rows, as in any mixture). Data files and export parts are 1/--parts of the 1x version (default:
   --mix-file-tokens = --file-tokens = pool tokens / 4), so every scale has units of the same size
   (4, 8, 16 of them) and only their number grows.

Measured, every process with RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false (one tokenizer thread),
in --repeat rounds that each run every variant once (the machine's other load moves between rounds, and
with it what a CPU-second buys: the goals use the median over rounds of ratios taken within a round):
* `ceiling:tokenizers`: bare `tokenizers.Tokenizer.encode_batch_fast` (no offsets: the fastest
  batch call; 1 thread, batches of 1,024, no special tokens) over the version's texts, loaded in
  memory first; CPU = process time of the encode calls; tokens = the ids plus one EOS per document
  (what the other rows write). `ceiling:tokenizers-pool`: the same in the --workers pool processes at
  once (one data file per call, read before the timed encode): the ceiling under the parallelism ours
  and datatrove run with. `bare:encode_batch`: `encode_batch` (offsets computed: what datatrove
  calls); `bare:load_tokenizer`: mixforge's `load_tokenizer(...).encode_batch` (flat ids + offsets);
* `datatrove`: datatrove's `ParquetReader` (text and id columns) -> `DocumentTokenizer` (same
  tokenizer.json, eos_token `<|endoftext|>`, `shuffle_documents=True`, seed 0, max_tokens_per_file
  = --file-tokens) over the version's data files, one task per file, `LocalPipelineExecutor` with
  --workers workers (start method fork, so its workers are children whose CPU `getrusage` counts), in
  its own venv (--datatrove-python) as a subprocess; CPU = RUSAGE_SELF + RUSAGE_CHILDREN of that
  process around the pipeline run (its interpreter start and imports excluded, as ours). Its shuffle
  is within each task's output file only (a permutation of that task's documents); the global
  shuffle datatrove offers is a second step, `DocumentTokenizerMerger` (one task: it reads every
  file's documents in a random order of files and documents), measured as `datatrove+merge`
  (tokenizer + merger CPU);
* `ours`: `mixforge.export.build.run_export(store, name, version, ExportConfig(format="megatron",
  tokenizer=huggingface tokenizer.json, eos_token, file_tokens=--file-tokens), executor=...)` with
  the executor over --workers bare worker processes (`harness.BarePool`, warmed, Arrow on one
  thread as in `executor.call_on_worker`): read, tokenise, global shuffle (scatter/gather), write
  .bin/.idx and lineage sidecars, manifest; CPU = the benchmark's process tree (driver + workers),
  split into the driver, each step's calls (measured in the worker) and the rest.
* memory: one export per --scale, each in a fresh pool, with the same unit sizes: the largest peak
  RSS of one step call (reset before each call, as the pool and Ray workers do) and each worker's
  high-water mark over the run should stay flat while the version grows.

tokens/s per core = tokens written / CPU-seconds. Goal (issue #17): ours >= 1.5x datatrove, or
>= 0.9x the ceiling when datatrove is already within 1.5x of it (both are checked and shown).
--profile runs one more 1x export in this process and cProfiles one scatter and one gather call
(the second of each: the first pays the imports and the tokenizer load), reporting where the time goes.
"""

from __future__ import annotations

import os

# One tokenizer thread in this process and in every child (read when `tokenizers` starts its thread pool).
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_export.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

EOS = "<|endoftext|>"
CEILING_ROW = "ceiling:tokenizers"
POOL_CEILING_ROW = "ceiling:tokenizers-pool"
DATATROVE_ROW = "datatrove"
DEFAULT_DT_PYTHON = "/tmp/dt-venv/bin/python"
TOKENIZER_VERSION = 1  # bump when the trained tokenizer's recipe changes
ENCODE_BATCH = 1024  # documents per encode call (TokenizerSpec.batch_docs' default)
CALLS = {
    CEILING_ROW: "tokenizers' encode_batch_fast",
    "bare:encode_batch": "tokenizers' encode_batch (with offsets)",
    "bare:load_tokenizer": "mixforge load_tokenizer().encode_batch",
    POOL_CEILING_ROW: "tokenizers' encode_batch_fast",
}


# ----------------------------------------------------------------------------- set-up


def train_tokenizer(out_dir: Path, corpus_dir: str, vocab: int) -> Path:
    """A byte-level BPE tokenizer.json trained on the corpus text (cached by its recipe and inputs)."""
    docs, origin = harness.load_base_documents(corpus_dir)
    texts = [d["text"] for d in docs]
    key = hashlib.sha256(
        json.dumps([TOKENIZER_VERSION, vocab, origin, len(texts), sum(map(len, texts))]).encode()
    ).hexdigest()[:12]
    path = out_dir / f"bpe-{vocab}-{key}" / "tokenizer.json"
    if path.exists():
        return path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    started = time.perf_counter()
    tok.train_from_iterator(texts, trainer, length=len(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path.with_suffix(".tmp")))
    os.replace(path.with_suffix(".tmp"), path)
    print(f"tokenizer: trained {tok.get_vocab_size()} tokens in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return path


def build_version(work: Path, pool_dir: str, scale: int, tokenizer: Path, mix_file_tokens: int, executor) -> dict:
    """The mixture version of `scale` x the pool (cached: reused when its recipe matches); its manifest."""
    from mixforge.mixtures.build import build_mixture, spec_for_pool
    from mixforge.storage import read_json

    store = work / "store"
    name = f"bench-x{scale}"
    recipe = {
        "pool": json.loads((Path(pool_dir) / harness.CORPUS_MANIFEST).read_text())["params"],
        "scale": scale,
        "tokenizer_sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest(),
        "mix_file_tokens": mix_file_tokens,
    }
    marker = store / f"{name}.bench.json"
    if marker.exists():
        cached = json.loads(marker.read_text())
        if cached["recipe"] == recipe and os.path.exists(cached["manifest"]):
            return version_info(str(store), read_json(cached["manifest"]))
    shutil.rmtree(store / "mixtures" / name, ignore_errors=True)
    spec = spec_for_pool(
        pool_dir,
        str(store),
        name=name,
        budget_fraction=float(scale),
        max_epochs=float(scale),
        tokenizer={"kind": "huggingface", "name": str(tokenizer)},
        output={"shard_tokens": mix_file_tokens},
    )
    out = build_mixture(spec, executor)
    store.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"recipe": recipe, "manifest": out["manifest"]}))
    return version_info(str(store), read_json(out["manifest"]))


def pool_tokens(pool_dir: str, tokenizer: Path, executor) -> int:
    """Tokens of the pool (the 1x version's), from the mixture's own cached counts."""
    import pyarrow.parquet as pq

    from mixforge.mixtures.build import count_tokens, spec_for_pool
    from mixforge.mixtures.pool import resolve_pool

    spec = spec_for_pool(pool_dir, pool_dir, tokenizer={"kind": "huggingface", "name": str(tokenizer)})
    sidecars = count_tokens(spec, resolve_pool(spec.pool), executor)
    return sum(pq.read_table(s, columns=["n_tokens"]).column(0).to_numpy().sum() for s in sidecars)


def version_info(store: str, manifest: dict) -> dict:
    files = manifest["files"]
    return {
        "store": store,
        "name": manifest["name"],
        "version": manifest["version"],
        "files": files,
        "docs": sum(f["rows"] for f in files),
        "tokens": sum(f["tokens"] for f in files),
    }


def version_texts(manifest: dict) -> list[str]:
    """Every row's text of the version, in data-file order (repeats included)."""
    import pyarrow.parquet as pq

    texts: list[str] = []
    for f in manifest["files"]:
        texts.extend(pq.read_table(f["uri"], columns=["text"]).column("text").to_pylist())
    return texts


# ----------------------------------------------------------------------------- measurement helpers


def _proc_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of a live process (its reaped children included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process tree: this process and its reaped children (getrusage),
    plus every live descendant with its own reaped children (/proc), so a worker that exits is not lost."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = harness.descendants(os.getpid()) - {os.getpid()}
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + sum(_proc_cpu(p) for p in live)


def _vm_hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def worker_rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS), MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


@contextlib.contextmanager
def cpu_timed():
    """`harness.timed()` (wall seconds, other processes' load) with CPU seconds of the whole tree,
    exited children included."""
    before = tree_cpu_seconds()
    with harness.timed() as t:
        yield t
    t["cpu_seconds"] = round(tree_cpu_seconds() - before, 3)


def per_core_row(name: str, tokens: int, cpu: float, docs: int, **more) -> dict:
    return {
        "variant": name,
        "tokens": tokens,
        "docs": docs,
        "cpu_seconds": round(cpu, 3),
        "tokens_per_cpu_s": round(tokens / cpu) if cpu > 0 else None,
        **more,
    }


# ----------------------------------------------------------------------------- ceiling


def _encode_rate(name: str, texts: list[str], encode) -> dict:
    """Tokens (+ one EOS per document) over the process time of `encode(batch) -> text tokens`."""
    encode(texts[:8])  # warm
    n, started, wall = 0, time.process_time(), time.perf_counter()
    for i in range(0, len(texts), ENCODE_BATCH):
        n += encode(texts[i : i + ENCODE_BATCH])
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    return per_core_row(name, n + len(texts), cpu, len(texts), wall_seconds=round(wall, 3), text_tokens=n)


def measure_ceiling(texts: list[str], tokenizer: Path) -> list[dict]:
    """Bare `tokenizers` over texts already in memory, one thread, no special tokens: `encode_batch_fast`
    (no offsets: the fastest call, the ceiling) and `encode_batch` (what datatrove calls); then the
    same through mixforge's `load_tokenizer` (flat ids + offsets), the wrapper's own cost."""
    from tokenizers import Tokenizer

    from mixforge.mixtures.spec import TokenizerSpec
    from mixforge.tokenizer import load_tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    loaded = load_tokenizer(TokenizerSpec(kind="huggingface", name=str(tokenizer)), eos_token=EOS)
    return [
        _encode_rate(
            CEILING_ROW, texts, lambda b: sum(len(e.ids) for e in tok.encode_batch_fast(b, add_special_tokens=False))
        ),
        _encode_rate(
            "bare:encode_batch",
            texts,
            lambda b: sum(len(e.ids) for e in tok.encode_batch(b, add_special_tokens=False)),
        ),
        _encode_rate("bare:load_tokenizer", texts, lambda b: len(loaded.encode_batch(b)[0])),
    ]


def _encode_file(uri: str, tokenizer: str) -> tuple[int, float, int]:
    """In a pool worker: one data file's texts read first, then encoded bare (encode_batch_fast, one
    thread); (tokens + one EOS per document, CPU seconds of the encode calls, documents)."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    texts = pq.read_table(uri, columns=["text"]).column("text").to_pylist()
    tok = Tokenizer.from_file(tokenizer)
    tok.encode_batch_fast(texts[:8], add_special_tokens=False)  # warm
    n, started = 0, time.process_time()
    for i in range(0, len(texts), ENCODE_BATCH):
        n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i : i + ENCODE_BATCH], add_special_tokens=False))
    return n + len(texts), time.process_time() - started, len(texts)


def measure_pool_ceiling(manifest: dict, tokenizer: Path, pool: harness.BarePool) -> dict:
    """The bare encode in the pool's worker processes at once (one data file per call, its texts read
    before the timed encode): the per-core ceiling under the same parallelism as ours and datatrove."""
    with harness.timed() as t:
        done = list(pool.imap_unordered(_encode_task, [(f["uri"], str(tokenizer)) for f in manifest["files"]]))
    tokens, cpu, docs = (sum(x) for x in zip(*done))
    return per_core_row(
        POOL_CEILING_ROW,
        tokens,
        cpu,
        docs,
        wall_seconds=round(t["seconds"], 3),
        others_busy_cores=t["others_busy_cores"],
    )


def _encode_task(task: tuple[str, str]) -> tuple[int, float, int]:
    return _encode_file(*task)


# ----------------------------------------------------------------------------- ours


# --metadata-template: every export of the run conditions on it (the per-row prefix is the path it measures)
METADATA_TEMPLATE: str | None = None


def export_config(tokenizer: Path, file_tokens: int):
    from mixforge.export.build import ExportConfig
    from mixforge.mixtures.spec import TokenizerSpec

    return ExportConfig(
        format="megatron",
        tokenizer=TokenizerSpec(kind="huggingface", name=str(tokenizer)),
        eos_token=EOS,
        file_tokens=file_tokens,
        seed=0,
        metadata={"template": METADATA_TEMPLATE} if METADATA_TEMPLATE else None,
    )


def clear_exports(manifest: dict) -> None:
    from mixforge.mixtures.versions import MixtureLayout

    version_dir = MixtureLayout(manifest["store"], manifest["name"]).version_dir(manifest["version"])
    shutil.rmtree(os.path.join(version_dir, "export"), ignore_errors=True)


def _step_of(fn, calls) -> str:
    # a composite may wrap its steps (export's `_indexed_call(i, step, job, options)`): name the step
    step = next((a for a in calls[0].args if callable(a)), fn) if calls else fn
    return step.__name__


def _measured_call(fn, *args):
    """In a pool worker: the call with this process's peak RSS reset before it (as executor.call_on_worker
    does, so the peak is the call's own) and its CPU seconds."""
    from mixforge.executor import reset_peak_rss

    reset_peak_rss()
    start_mb, cpu = harness.current_rss_mb(), time.process_time()
    result = fn(*args)
    # VmHWM, not ru_maxrss: the latter also keeps the high-water marks that exited threads recorded before the reset
    peak = _vm_hwm_mb(os.getpid())
    return result, {"cpu_seconds": time.process_time() - cpu, "peak_rss_mb": peak, "start_rss_mb": start_mb}


def measuring_executor(pool, log: dict):
    """An `Executor` over the pool's processes that logs, per step, its calls, their CPU seconds and the
    largest peak RSS of one call (`log[step]`)."""
    import concurrent.futures as cf

    from mixforge.executor import Executor, format_error

    class MeasuringExecutor(Executor):
        def run(self, fn, calls, **kw):
            entry = log.setdefault(
                _step_of(fn, calls), {"calls": 0, "cpu_seconds": 0.0, "call_peak_rss_mb": 0.0, "call_growth_mb": 0.0}
            )
            futures = {pool.submit(_measured_call, fn, *c.args): c.label for c in calls}
            for f in cf.as_completed(futures):  # yielded as they finish, for the executor's fold
                error = f.exception()
                if error is not None:
                    yield futures[f], None, format_error(error)
                    continue
                result, m = f.result()
                entry["calls"] += 1
                entry["cpu_seconds"] = round(entry["cpu_seconds"] + m["cpu_seconds"], 3)
                entry["call_peak_rss_mb"] = round(max(entry["call_peak_rss_mb"], m["peak_rss_mb"]), 1)
                # what the call itself added over the worker's resident memory when it started
                growth = m["peak_rss_mb"] - m["start_rss_mb"]
                entry["call_growth_mb"] = round(max(entry["call_growth_mb"], growth), 1)
                yield futures[f], result, None

    return MeasuringExecutor()


def run_ours(manifest: dict, tokenizer: Path, file_tokens: int, pool: harness.BarePool) -> dict:
    """One full export of the version (its export folder removed first) in the pool's workers."""
    from mixforge.export.build import run_export

    clear_exports(manifest)
    config = export_config(tokenizer, file_tokens)
    steps: dict = {}
    harness.PeakRSS.reset()
    driver = resource.getrusage(resource.RUSAGE_SELF)
    with cpu_timed() as t:
        out = run_export(
            manifest["store"],
            manifest["name"],
            manifest["version"],
            config,
            executor=measuring_executor(pool.pool, steps),
        )
    after = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = after.ru_utime + after.ru_stime - driver.ru_utime - driver.ru_stime
    workers = {str(pid): worker_rss_mb(pid) for pid in pool.pids}
    return {
        "tokens": out["tokens"],
        "docs": out["docs"],
        "partitions": out["partitions"],
        "files": len(out["files"]),
        "seconds": round(t["seconds"], 3),
        "cpu_seconds": t["cpu_seconds"],
        "others_busy_cores": t["others_busy_cores"],
        "driver_peak_rss_mb": harness.PeakRSS.mb(),
        # per step: calls, their CPU, the largest peak RSS of one call (each call's peak is its own)
        "steps": steps,
        # where the CPU went: the driver (planning, checks, manifest), the step calls, the rest (pool IPC)
        "cpu_breakdown": {
            "driver": round(driver_cpu, 3),
            "step_calls": round(sum(v["cpu_seconds"] for v in steps.values()), 3),
            "other": round(t["cpu_seconds"] - driver_cpu - sum(v["cpu_seconds"] for v in steps.values()), 3),
        },
        "worker_call_peak_rss_mb": max(v["call_peak_rss_mb"] for v in steps.values()),
        "worker_call_growth_mb": max(v["call_growth_mb"] for v in steps.values()),
        # each worker's resident memory after the run: what it keeps between calls (imports, caches, its heap)
        "worker_rss_after_mb": max(workers.values()),
        "worker_rss_after_by_pid_mb": workers,
    }


class ProfilingExecutor:
    """Runs every call in this process (as SerialExecutor) and cProfiles one call (the second, else the
    first) of the first step whose function name contains each of `names`."""

    def __new__(cls, names: tuple[str, ...], profiles: dict):
        import cProfile

        from mixforge.executor import Executor, SerialExecutor

        class _Profiling(Executor):
            def run(self, fn, calls, **kw):
                step = next((a for a in calls[0].args if callable(a)), fn) if calls else fn
                label = next((n for n in names if n in _step_of(fn, calls) and n not in profiles), None)
                if label is None:
                    yield from SerialExecutor().run(fn, calls, **kw)
                    return
                # the second call when there is one: the first pays this process's imports and tokenizer load
                k = min(1, len(calls) - 1)
                yield from SerialExecutor().run(fn, calls[:k], **kw)
                prof = cProfile.Profile()
                started, cpu = time.perf_counter(), time.process_time()
                prof.enable()
                result = fn(*calls[k].args)
                prof.disable()
                profiles[label] = {
                    "function": f"{step.__module__}.{step.__name__}",
                    "unit": str(calls[k].label),
                    "seconds": round(time.perf_counter() - started, 3),
                    "cpu_seconds": round(time.process_time() - cpu, 3),
                    "profile": prof,
                }
                yield calls[k].label, result, None
                yield from SerialExecutor().run(fn, calls[k + 1 :], **kw)

        return _Profiling()


def profile_steps(manifest: dict, tokenizer: Path, file_tokens: int) -> dict:
    """cProfile of one scatter and one gather call of a 1x export, in this process."""
    import pstats

    from mixforge.export.build import run_export

    clear_exports(manifest)
    profiles: dict = {}
    run_export(
        manifest["store"],
        manifest["name"],
        manifest["version"],
        export_config(tokenizer, file_tokens),
        executor=ProfilingExecutor(("scatter", "gather"), profiles),
    )
    out = {}
    for label, p in profiles.items():
        stats = pstats.Stats(p.pop("profile"))
        total = stats.total_tt
        rows = []
        for (file, line, func), (_calls, nc, tt, ct, _callers) in stats.stats.items():
            rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime": tt, "cumtime": ct})
        by_tot = sorted(rows, key=lambda r: -r["tottime"])[:15]
        by_cum = sorted(rows, key=lambda r: -r["cumtime"])[:25]
        for r in by_tot + by_cum:
            r["tottime"], r["cumtime"] = round(r["tottime"], 4), round(r["cumtime"], 4)
            r["share_tottime"] = round(r["tottime"] / total, 3) if total else None
        out[label] = {**p, "profiled_seconds": round(total, 3), "top_tottime": by_tot, "top_cumtime": by_cum}
    clear_exports(manifest)
    return out


# ----------------------------------------------------------------------------- datatrove (its own venv)


def datatrove_worker_main(spec_path: str) -> None:
    """In datatrove's venv: tokenizer (+ merger) over the version's data files; CPU of this process tree."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer, DocumentTokenizerMerger

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    paths_file = out / "paths.txt"
    paths_file.write_text("\n".join(spec["files"]) + "\n")

    def cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    result = {}
    tokenize = LocalPipelineExecutor(
        pipeline=[
            ParquetReader(spec["data_dir"], paths_file=str(paths_file), read_metadata=False, text_key="text"),
            DocumentTokenizer(
                output_folder=str(out / "tokenized"),
                tokenizer_name_or_path=spec["tokenizer"],
                eos_token=spec["eos"],
                shuffle_documents=True,
                seed=spec["seed"],
                max_tokens_per_file=spec["file_tokens"],
            ),
        ],
        tasks=len(spec["files"]),
        workers=spec["workers"],
        logging_dir=str(out / "logs-tokenize"),
        skip_completed=False,
        start_method="fork",
    )
    merge = LocalPipelineExecutor(
        pipeline=[
            DocumentTokenizerMerger(
                input_folder=str(out / "tokenized"),
                output_folder=str(out / "merged"),
                save_filename="merged",
                max_tokens_per_file=spec["file_tokens"],
                shuffle=True,
                seed=spec["seed"],
                progress=False,
            )
        ],
        tasks=1,
        workers=1,
        logging_dir=str(out / "logs-merge"),
        skip_completed=False,
    )
    for name, executor in (("tokenize", tokenize), ("merge", merge)):
        c0, t0 = cpu(), time.perf_counter()
        executor.run()
        result[name] = {"cpu_seconds": cpu() - c0, "seconds": time.perf_counter() - t0}
        folder = out / ("tokenized" if name == "tokenize" else "merged")
        result[name]["token_bytes"] = sum(p.stat().st_size for p in folder.glob("*.ds"))
        result[name]["files"] = len(list(folder.glob("*.ds")))
    Path(spec["result"]).write_text(json.dumps(result))


def run_datatrove(python: str, manifest: dict, tokenizer: Path, file_tokens: int, workers: int, work: Path) -> dict:
    out = Path(harness.fresh_dir(work / "datatrove"))
    data_dir = os.path.commonpath([f["uri"] for f in manifest["files"]])
    spec = {
        "data_dir": data_dir,
        "files": [os.path.relpath(f["uri"], data_dir) for f in manifest["files"]],
        "tokenizer": str(tokenizer),
        "eos": EOS,
        "seed": 0,
        "file_tokens": file_tokens,
        "workers": workers,
        "out_dir": str(out),
        "result": str(out / "result.json"),
    }
    spec_path = out / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", TQDM_DISABLE="1")
    with cpu_timed() as t:
        proc = subprocess.run(
            [python, str(Path(__file__).resolve()), "--datatrove-worker", str(spec_path)],
            env=env,
            capture_output=True,
            text=True,
        )
    (out / "stderr.log").write_text(proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"datatrove failed (rc {proc.returncode}); see {out / 'stderr.log'}:\n{proc.stderr[-3000:]}"
        )
    result = json.loads((out / "result.json").read_text())
    result["subprocess"] = {
        "seconds": round(t["seconds"], 3),
        "cpu_seconds": t["cpu_seconds"],
        "others_busy_cores": t["others_busy_cores"],
    }
    return result


# ----------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def per_core_section(rows: list[dict]) -> str:
    by = {r["variant"]: r["tokens_per_cpu_s"] for r in rows}
    lines = [
        "tokens/s per core (tokens written / CPU-seconds of the process tree; one tokenizer thread everywhere):",
        f"  {'variant':24s}{'tokens':>12s}{'docs':>8s}{'CPU s':>9s}{'tok/s/core':>12s}"
        f"{'vs datatrove':>14s}{'vs ceiling':>12s}{'vs pool ceiling':>17s}",
    ]
    for r in rows:
        lines.append(
            f"  {r['variant']:24s}{r['tokens']:>12,}{r['docs']:>8,}{r['cpu_seconds']:>9.2f}"
            f"{r['tokens_per_cpu_s'] or 0:>12,}"
            f"{_x(ratio(r['tokens_per_cpu_s'], by.get(DATATROVE_ROW))):>14s}"
            f"{_x(ratio(r['tokens_per_cpu_s'], by.get(CEILING_ROW))):>12s}"
            f"{_x(ratio(r['tokens_per_cpu_s'], by.get(POOL_CEILING_ROW))):>17s}"
        )
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def scale_section(scales: list[dict]) -> str:
    lines = [
        "ours at each scale (same unit sizes, a fresh pool each): peak RSS per worker should stay flat. call peak: "
        "the largest peak RSS of one step call (reset before each, as the pool and Ray workers do); call growth: "
        "the most one call added over the worker's RSS when it started; RSS after: a worker's RSS after the run",
        f"  {'scale':>5s}{'docs':>8s}{'tokens':>12s}{'parts':>7s}{'seconds':>9s}{'CPU s':>8s}"
        f"{'tok/s/core':>12s}{'call peak MB':>14s}{'call growth MB':>16s}{'RSS after MB':>14s}{'others':>8s}",
    ]
    for s in scales:
        lines.append(
            f"  {s['scale']:>4d}x{s['docs']:>8,}{s['tokens']:>12,}{sum(s['partitions'].values()):>7d}"
            f"{s['seconds']:>9.2f}{s['cpu_seconds']:>8.2f}{s['tokens_per_cpu_s']:>12,}"
            f"{s['worker_call_peak_rss_mb']:>14.0f}{s['worker_call_growth_mb']:>16.0f}{s['worker_rss_after_mb']:>14.0f}"
            f"{s['others_busy_cores'] or 0:>8.2f}"
        )
        steps = ", ".join(
            f"{k} {v['calls']} calls {v['cpu_seconds']:.2f} CPU s, peak {v['call_peak_rss_mb']:.0f} MB "
            f"(+{v['call_growth_mb']:.0f})"
            for k, v in s["steps"].items()
        )
        cpu = s["cpu_breakdown"]
        lines.append(
            f"         CPU: driver {cpu['driver']:.2f}s, steps {cpu['step_calls']:.2f}s ({steps}), "
            f"other {cpu['other']:.2f}s"
        )
    return "\n".join(lines)


def profile_section(profiles: dict) -> str:
    lines = []
    for label, p in profiles.items():
        lines.append(
            f"profile of one {label} call ({p['function']} {p['unit']}): {p['seconds']:.2f}s wall, "
            f"{p['cpu_seconds']:.2f} CPU s; top by own time:"
        )
        for r in p["top_tottime"][:12]:
            lines.append(
                f"  {r['tottime']:8.3f}s {100 * (r['share_tottime'] or 0):5.1f}%  cum {r['cumtime']:8.3f}s  "
                f"{r['calls']:>8d}x  {r['function']}"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main() -> None:
    harness.configure_environment()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_run_args(p, repeat=1, work_dir="/tmp/mixforge-bench-export")
    p.add_argument("--mb", type=float, default=16.0, help="MB of text in the pool = the 1x version (default 16)")
    p.add_argument("--scale", default="1,2,4", help="version sizes as multiples of the pool; the first is compared")
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary of the trained BPE tokenizer")
    p.add_argument(
        "--parts",
        type=int,
        default=4,
        help="data files of the 1x version and parts of its export (default 4): --mix-file-tokens and --file-tokens "
        "default to 1/parts of the pool's tokens, so every scale's files and parts have the same size",
    )
    p.add_argument("--file-tokens", type=int, default=None, help="ExportConfig.file_tokens (and datatrove's)")
    p.add_argument("--mix-file-tokens", type=int, default=None, help="tokens per data file of the versions")
    p.add_argument("--datatrove-python", default=DEFAULT_DT_PYTHON, help="python of a venv with datatrove")
    p.add_argument("--skip-datatrove", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile one scatter and one gather call (1x)")
    p.add_argument(
        "--metadata-template",
        default=None,
        help="metadata conditioning of our export, e.g. '{source} {domain}\\n\\n' (escapes decoded; default off)",
    )
    p.add_argument("--datatrove-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.datatrove_worker:
        return datatrove_worker_main(args.datatrove_worker)
    global METADATA_TEMPLATE
    if args.metadata_template:
        METADATA_TEMPLATE = args.metadata_template.encode().decode("unicode_escape")

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    scales = [int(s) for s in args.scale.split(",")]
    tokenizer = train_tokenizer(work / "tokenizer", args.corpus_dir, args.vocab)
    shards = 4
    corpus = harness.make_corpus(work / "pool", shards, args.mb / shards, corpus_dir=args.corpus_dir)

    if not args.skip_datatrove and not os.path.exists(args.datatrove_python):
        raise SystemExit(
            f"{args.datatrove_python} not found: python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install "
            "-r benchmarks/requirements-datatrove.txt (or --skip-datatrove)"
        )
    imports = ("mixforge.export.build", "tokenizers")
    token_size = 2 if args.vocab <= 65536 else 4
    with harness.BarePool(args.workers, imports=imports) as pool:
        # every size in units of the 1x version, so a unit of work (a data file, a part) is the same at every scale
        unit = int(pool_tokens(corpus.dir, tokenizer, pool.executor())) // args.parts + 1
        args.mix_file_tokens = args.mix_file_tokens or unit
        args.file_tokens = args.file_tokens or unit
        versions = {
            s: build_version(work, corpus.dir, s, tokenizer, args.mix_file_tokens, pool.executor()) for s in scales
        }
        base = versions[scales[0]]
        sizes = ", ".join(f"{s}x: {v['docs']:,} docs, {v['tokens']:,} tokens" for s, v in versions.items())
        print(f"versions: {sizes}", file=sys.stderr)
        texts = version_texts(base)
        text_bytes = sum(len(t.encode()) for t in texts)
        # --repeat rounds of every variant, interleaved: the other helpers' load moves between rounds and
        # changes what a CPU-second buys, so ratios are taken within each round (their median is reported)
        rounds = []
        for r in range(args.repeat):
            rows = {"ours": run_ours(base, tokenizer, args.file_tokens, pool)}
            rows[POOL_CEILING_ROW] = measure_pool_ceiling(base, tokenizer, pool)
            rows.update((row["variant"], row) for row in measure_ceiling(texts, tokenizer))
            if not args.skip_datatrove:
                dt = run_datatrove(args.datatrove_python, base, tokenizer, args.file_tokens, args.workers, work)
                rows["datatrove_run"] = dt
                rows[DATATROVE_ROW] = per_core_row(
                    DATATROVE_ROW,
                    dt["tokenize"]["token_bytes"] // token_size,
                    dt["tokenize"]["cpu_seconds"],
                    base["docs"],
                    wall_seconds=round(dt["tokenize"]["seconds"], 3),
                )
                rows["datatrove+merge"] = per_core_row(
                    "datatrove+merge",
                    dt["merge"]["token_bytes"] // token_size,
                    dt["tokenize"]["cpu_seconds"] + dt["merge"]["cpu_seconds"],
                    base["docs"],
                    wall_seconds=round(dt["tokenize"]["seconds"] + dt["merge"]["seconds"], 3),
                )
            o = rows["ours"]
            rows["ours_row"] = per_core_row(
                "ours", o["tokens"], o["cpu_seconds"], o["docs"], wall_seconds=o["seconds"]
            )
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{k} {v['cpu_seconds']:.2f} CPU s" for k, v in rows.items() if "cpu_seconds" in v and k != "ours"
                ),
                file=sys.stderr,
            )
            rounds.append(rows)
        del texts
    # memory: one export per scale, each in a fresh pool, so every scale's workers start from the same state
    ours = {}
    for s in scales:
        with harness.BarePool(args.workers, imports=imports) as fresh:
            ours[s] = run_ours(versions[s], tokenizer, args.file_tokens, fresh)
        ours[s]["scale"] = s
        ours[s]["tokens_per_cpu_s"] = round(ours[s]["tokens"] / ours[s]["cpu_seconds"])
        print(f"ours {s}x: {json.dumps({k: v for k, v in ours[s].items() if 'by_pid' not in k})}", file=sys.stderr)

    # per variant: the round with the least CPU (all rounds' CPU listed)
    names = [CEILING_ROW, POOL_CEILING_ROW, "bare:encode_batch", "bare:load_tokenizer"]
    names += [] if args.skip_datatrove else [DATATROVE_ROW, "datatrove+merge"]
    per_core = []
    for name in [*names, "ours_row"]:
        best = dict(min((r[name] for r in rounds), key=lambda row: row["cpu_seconds"]))
        best["runs_cpu_seconds"] = [round(r[name]["cpu_seconds"], 3) for r in rounds]
        per_core.append(best)
    o = min((r["ours"] for r in rounds), key=lambda r: r["cpu_seconds"])
    dt = (
        None
        if args.skip_datatrove
        else min((r["datatrove_run"] for r in rounds), key=lambda r: r["tokenize"]["cpu_seconds"])
    )
    # every side writes the same tokens: the version's texts, one EOS each (a cheap check that they did the same work)
    same_tokens = len({r["tokens"] for r in per_core}) == 1

    def paired(a: str, b: str) -> float | None:
        """The median over rounds of a's tokens/s per core over b's, both measured in the same round."""
        if a not in rounds[0] or b not in rounds[0]:
            return None
        values = sorted(r[b]["cpu_seconds"] / r[a]["cpu_seconds"] for r in rounds)
        return round(values[len(values) // 2], 3)

    ours_vs_dt, ours_vs_ceiling = paired("ours_row", DATATROVE_ROW), paired("ours_row", CEILING_ROW)
    dt_vs_ceiling, ours_vs_pool = paired(DATATROVE_ROW, CEILING_ROW), paired("ours_row", POOL_CEILING_ROW)
    goals = []
    if ours_vs_dt is not None:
        goals.append(("ours", 1.5, "tokens/s per core vs datatrove (median of rounds)", ours_vs_dt))
    goals.append(("ours", 0.9, "tokens/s per core vs the bare-tokenizers ceiling (median of rounds)", ours_vs_ceiling))
    # The rule: the ceiling goal applies when datatrove is already within 1.5x of the ceiling.
    applicable = "ceiling" if dt_vs_ceiling is not None and dt_vs_ceiling * 1.5 >= 1 else "datatrove"
    met = (ours_vs_ceiling or 0) >= 0.9 if applicable == "ceiling" else (ours_vs_dt or 0) >= 1.5

    docs = o["docs"]
    results = [
        harness.Measurement(
            r["variant"],
            r["docs"],
            text_bytes,
            r.get("wall_seconds", float("nan")),
            float("nan"),
            description=f"{CALLS[r['variant']]}, one thread, texts in memory, "
            + (
                f"in {args.workers} worker processes at once"
                if r["variant"] == POOL_CEILING_ROW
                else "in this process"
            ),
            cpu_seconds=r["cpu_seconds"],
            baseline="-",
            ceiling="-",
        )
        for r in per_core
        if r["variant"] in CALLS
    ]
    if dt is not None:
        results.append(
            harness.Measurement(
                DATATROVE_ROW,
                docs,
                text_bytes,
                dt["tokenize"]["seconds"],
                float("nan"),
                description=f"ParquetReader -> DocumentTokenizer (shuffle within each task's file), "
                f"LocalPipelineExecutor, {args.workers} workers, own venv",
                cpu_seconds=round(dt["tokenize"]["cpu_seconds"], 3),
                baseline="-",
                ceiling="-",
            )
        )
        results.append(
            harness.Measurement(
                "datatrove+merge",
                docs,
                text_bytes,
                dt["tokenize"]["seconds"] + dt["merge"]["seconds"],
                float("nan"),
                description="the same, then DocumentTokenizerMerger (its global shuffle, one task)",
                cpu_seconds=round(dt["tokenize"]["cpu_seconds"] + dt["merge"]["cpu_seconds"], 3),
                baseline=DATATROVE_ROW,
                ceiling="-",
            )
        )
    results.append(
        harness.Measurement(
            "ours",
            docs,
            text_bytes,
            o["seconds"],
            o["driver_peak_rss_mb"],
            o["worker_call_peak_rss_mb"],
            description=f"run_export (megatron, global shuffle, lineage) on {args.workers} bare worker processes",
            others_busy_cores=o["others_busy_cores"],
            cpu_seconds=o["cpu_seconds"],
            baseline=DATATROVE_ROW,
            ceiling="-",
        )
    )
    profiles = {}
    if args.profile:
        profiles = profile_steps(base, tokenizer, args.file_tokens)
    medians = (
        f"median over {len(rounds)} round(s) of ratios taken within a round: ours/datatrove {ours_vs_dt}, "
        f"ours/ceiling {ours_vs_ceiling}, datatrove/ceiling {dt_vs_ceiling}, ours/pool ceiling {ours_vs_pool} "
        "(the goals use these; the table above shows each variant's least-CPU round)"
    )
    sections = [per_core_section(per_core) + "\n" + medians, scale_section([ours[s] for s in scales])]
    if profiles:
        sections.append(profile_section(profiles))
    extra = {
        "tokens_per_cpu_s": per_core,
        # medians over the rounds of ratios taken within one round
        "ratios": {
            "ours/datatrove": ours_vs_dt,
            "ours/ceiling": ours_vs_ceiling,
            "datatrove/ceiling": dt_vs_ceiling,
            "ours/pool_ceiling": ours_vs_pool,
            "datatrove/pool_ceiling": paired(DATATROVE_ROW, POOL_CEILING_ROW),
        },
        "rounds": [{k: v["cpu_seconds"] for k, v in r.items() if "cpu_seconds" in v} for r in rounds],
        "goal": {"applicable": applicable, "met": met},
        "same_tokens_everywhere": same_tokens,
        "scales": [ours[s] for s in scales],
        "worker_call_peak_rss_mb_by_scale": {f"{s}x": ours[s]["worker_call_peak_rss_mb"] for s in scales},
        "worker_call_growth_mb_by_scale": {f"{s}x": ours[s]["worker_call_growth_mb"] for s in scales},
        "worker_rss_after_mb_by_scale": {f"{s}x": ours[s]["worker_rss_after_mb"] for s in scales},
        "datatrove": dt,
        "tokenizer": {"path": str(tokenizer), "vocab": args.vocab, "eos": EOS},
        "version": {
            "store": base["store"],
            "name": base["name"],
            "version": base["version"],
            "docs": base["docs"],
            "tokens": base["tokens"],
            "files": len(base["files"]),
        },
        "profile": profiles,
    }
    harness.report(
        results,
        None,
        benchmark="export",
        params={
            "mb": args.mb,
            "scales": args.scale,
            "workers": args.workers,
            "file_tokens": args.file_tokens,
            "mix_file_tokens": args.mix_file_tokens,
            "vocab": args.vocab,
            "metadata_template": METADATA_TEMPLATE,
        },
        corpus=corpus,
        goals=goals,
        extra=extra,
        sections=sections,
        notes=[
            "the table's seconds and docs/s are wall time (the ceiling rows: one process); the figure the issue "
            "asks for is tokens/s per core (the section above the goals), which other load moves less",
            f"goal rule: ours >= 1.5x datatrove, or >= 0.9x the ceiling when datatrove is within 1.5x of it "
            f"(datatrove/ceiling {dt_vs_ceiling}); applicable here: {applicable} -> {'MET' if met else 'NOT MET'}",
            "datatrove writes .ds token files (its DocumentTokenizer format) with its in-file shuffle; its "
            "MegatronDocumentTokenizer has no shuffle; ours writes Megatron .bin/.idx + lineage sidecars",
        ],
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
