#!/usr/bin/env python
"""Benchmark: proxy training throughput. `mixforge.optimize.proxy.train_proxy` against a bare torch
training loop on the same model and the same tokens, in one process run.

    .venv/bin/python -m benchmarks.bench_proxy                                 # 2 threads, 1M tokens
    .venv/bin/python -m benchmarks.bench_proxy --train-tokens 200000 --repeat 1  # quick
    .venv/bin/python -m benchmarks.bench_proxy --json-out /tmp/proxy.json
    .venv/bin/python -m benchmarks.bench_proxy --device cuda                   # on a GPU

Data: the documents of ../shared/corpus (synthetic text when absent; harness.load_base_documents)
tokenised with the mixture default tokeniser (tiktoken cl100k_base, mixforge.tokenizer), EOS after
each document, in a seeded order: one token stream, the first --train-tokens of which both variants
train on. The proxy vocabulary: the --vocab most frequent ids (proxy.vocab_table, as a search maps
them; 0: all 100,277 of the tokeniser's).

Variants (each builds a fresh model with the same config and seed, then trains on the same tokens
with --workers torch threads; model build included, evaluation excluded: no targets):
  bare    a plain loop: the same windows (seq_len + 1 tokens, stride seq_len), logits, cross-entropy,
          AdamW at a fixed lr, no schedule, no clipping
  ours    train_proxy(tokens, {}, config, threads=--workers): warm-up + cosine lr, gradient clipping
The rows' `docs` are TOKENS (docs/s = tokens/s), MB/s the corpus text those tokens came from.
After an untimed warm-up of both, the variants alternate (order swapped each round) --repeat times;
the fastest run of each is reported, all are listed. The goal (issue #18): ours >= 0.9x bare.
`others' cores` beside each row is the load not ours during it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_proxy.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import harness  # noqa: E402

GOAL_RATIO = 0.9


def token_stream(corpus_dir: str | None, n_tokens: int, seed: int):
    """(tokens, vocab_size, text bytes per token) from the corpus documents, EOS after each, seeded order."""
    import random

    import numpy as np

    from mixforge.mixtures.spec import TokenizerSpec
    from mixforge.tokenizer import load_tokenizer

    docs, origin = harness.load_base_documents(corpus_dir)
    random.Random(seed).shuffle(docs)
    tok = load_tokenizer(TokenizerSpec())
    pieces, have, text_bytes = [], 0, 0
    for start in range(0, len(docs), 256):
        batch = [d["text"] for d in docs[start : start + 256]]
        flat, offsets = tok.encode_batch(batch)
        ids = np.insert(flat, offsets[1:], tok.eos_id)  # EOS after each document
        pieces.append(ids)
        have += len(ids)
        text_bytes += sum(len(t.encode("utf-8")) for t in batch)
        if have > n_tokens + 1:
            break
    tokens = np.concatenate(pieces)
    if len(tokens) <= n_tokens:
        reps = -(-(n_tokens + 1) // len(tokens))
        tokens = np.tile(tokens, reps)  # a small corpus: repeated (the same for both variants)
    return tokens[: n_tokens + 1], tok.vocab_size, text_bytes / have, origin


def bare_loop(tokens, config, vocab: int, threads: int, device: str) -> int:
    """The plain torch loop on the proxy model: tokens trained on."""
    import torch
    import torch.nn.functional as F

    from mixforge.optimize.proxy import build_model

    torch.set_num_threads(threads)
    model = build_model(config, vocab).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    B, L = config.batch_size, config.seq_len
    data = torch.from_numpy(tokens.astype("int64"))
    for step in range(config.steps):
        block = data[step * B * L : (step + 1) * B * L + 1]
        x, y = block[:-1].view(B, L).to(device), block[1:].view(B, L).to(device)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return config.steps * B * L


def ours(tokens, config, threads: int, device: str) -> int:
    from mixforge.optimize.proxy import train_proxy

    result = ours.last = train_proxy(tokens, {}, config, device=device, threads=threads)
    return result.tokens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_run_args(parser, workers=2, repeat=2)
    parser.add_argument("--train-tokens", type=int, default=1_000_000, help="tokens per training (default 1M)")
    parser.add_argument("--hidden", type=int, default=64, help="proxy width (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="proxy blocks (default 2)")
    parser.add_argument("--seq-len", type=int, default=256, help="sequence length (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument(
        "--vocab",
        type=int,
        default=8192,
        help="proxy vocabulary: the most frequent ids (proxy.vocab_table; default 8192); 0: the tokeniser's all",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="document order and initialisation seed")
    args = parser.parse_args(argv)
    harness.configure_environment()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mixforge.classify.embed import resolve_device
    from mixforge.optimize.proxy import ProxyConfig, apply_vocab, vocab_table

    device = resolve_device(args.device)
    tokens, vocab, bytes_per_token, origin = token_stream(args.corpus_dir, args.train_tokens, args.seed)
    if args.vocab:
        vocab = args.vocab
        tokens = apply_vocab(tokens, vocab_table([tokens], vocab))
    config = ProxyConfig(
        hidden_size=args.hidden,
        layers=args.layers,
        heads=max(1, args.hidden // 32),
        vocab_size=vocab,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        train_tokens=args.train_tokens,
        seed=args.seed,
    )
    trained = config.steps * config.tokens_per_step
    text_bytes = int(trained * bytes_per_token)
    variants = {
        "bare": lambda: bare_loop(tokens, config, vocab, args.workers, device),
        "ours": lambda: ours(tokens, config, args.workers, device),
    }
    # Untimed warm-up of both (imports, torch's thread pool, first allocations), then alternating order.
    warm = config.model_copy(update={"train_tokens": 2 * config.tokens_per_step})
    bare_loop(tokens, warm, vocab, args.workers, device)
    ours(tokens, warm, args.workers, device)
    runs: dict[str, list[harness.Measurement]] = {name: [] for name in variants}
    for i in range(args.repeat):
        for name in sorted(variants, reverse=bool(i % 2)):
            runs[name].append(harness.measure(name, variants[name], text_bytes=text_bytes, workers=args.workers))
    results = [harness.best_of(name, r) for name, r in runs.items()]
    results[0].description = "plain torch loop on the proxy model (docs = tokens)"
    results[1].description = "mixforge.optimize.proxy.train_proxy (docs = tokens)"
    last = ours.last
    ratio = results[1].docs_per_s / results[0].docs_per_s
    extra = {
        "tokens_per_s": {r.name: round(r.docs_per_s, 1) for r in results},
        "proxy": {
            "params": last.params,
            "params_without_embeddings": last.params - vocab * config.hidden_size,
            "tokens": trained,
            "steps": config.steps,
            "final_train_loss": round(last.details["final_train_loss"], 4),
            "device": device,
            "threads": args.workers,
        },
        "config": config.model_dump(),
        "data": {"origin": origin, "text_bytes_per_token": round(bytes_per_token, 3)},
        "torch": torch.__version__,
    }
    if device == "cuda":
        extra["gpu"] = torch.cuda.get_device_name()
    return harness.report(
        results,
        "bare",
        benchmark="proxy",
        params={
            "train_tokens": args.train_tokens,
            "hidden": args.hidden,
            "layers": args.layers,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "threads": args.workers,
            "device": device,
            "repeat": args.repeat,
        },
        goals=[("ours", GOAL_RATIO, "tokens/s ratio vs bare", round(ratio, 3))],
        notes=[f"started {time.strftime('%Y-%m-%d %H:%M:%S')}; docs columns count tokens"],
        extra=extra,
        json_out=args.json_out,
        print_json=args.json,
    )


if __name__ == "__main__":
    main()
