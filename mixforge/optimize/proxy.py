"""Proxy models: a tiny decoder-only LM trained on one mixture's token sample, scored on each target.

RegMix's recipe: a random-init Hugging Face `transformers` model of ~1M parameters (here a Llama
configuration: hidden 64-128, 2-4 layers), the same tokeniser and the same fixed number of tokens
and hyper-parameters for every proxy, so the only thing that differs between proxies is the data.
Training reads the 1-D token array sequentially, `seq_len + 1` tokens per sequence (every token
is a label once), with AdamW, linear warm-up and cosine decay. A target's loss is the mean token
cross-entropy over its first `eval_tokens` tokens, in `seq_len` windows.

`sample_tokens` assembles a proxy's training array from per-group documents by weight: each
group's documents in a seeded order, taken in turn (a group that runs out starts again, at most
`max_repeats` passes), the last one cut so that each group gets exactly its share of the tokens;
then every chosen document is shuffled into one stream.

torch and transformers are imported on first use, so loading a search spec costs neither.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mixforge.strict import StrictModel

# A group's documents: a list of 1-D token arrays, or (flat tokens, int64 offsets of length n + 1).
GroupDocs = Sequence[np.ndarray] | tuple[np.ndarray, np.ndarray]


class ProxyConfig(StrictModel):
    """The proxy model and how it is trained: the same for every proxy of a search."""

    arch: Literal["llama", "gpt2"] = Field("llama", description="transformers model family of the proxy.")
    hidden_size: int = Field(64, ge=8, description="Model width.")
    layers: int = Field(2, ge=1, description="Transformer blocks.")
    heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width (default 4 x hidden_size).")
    vocab_size: int | None = Field(
        8192,
        ge=2,
        description="Embedding rows. A search maps token ids to its vocab_size - 1 most frequent ones plus one "
        "id for the rest (vocab_table), the same map for every proxy: a 100k-row LM head costs a CPU ~30x the "
        "time and GBs of logits. null: no map, the largest token id + 1.",
    )
    seq_len: int = Field(128, ge=2, description="Tokens per training sequence and evaluation window.")
    batch_size: int = Field(16, ge=1, description="Sequences per optimiser step.")
    train_tokens: int = Field(
        2_000_000, ge=1, description="Tokens each proxy trains on (the same for all; the array wraps if shorter)."
    )
    lr: float = Field(3e-3, gt=0, description="Peak learning rate (AdamW).")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Share of the steps with a linear warm-up.")
    min_lr_fraction: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at this fraction of lr.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    grad_clip: float | None = Field(1.0, gt=0, description="Gradient norm clip (null: off).")
    eval_tokens: int = Field(65_536, ge=2, description="Tokens of each target scored (its first ones).")
    eval_batch_size: int = Field(32, ge=1, description="Windows per evaluation batch.")
    seed: int = Field(0, ge=0, description="Initialisation seed (the data order is the array's).")

    @model_validator(mode="after")
    def _heads_divide(self) -> ProxyConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden_size ({self.hidden_size})")
        return self

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.train_tokens // self.tokens_per_step)


@dataclass
class ProxyResult:
    losses: dict[str, float]  # target name -> mean token cross-entropy (nats)
    tokens: int  # tokens trained on
    seconds: float  # training and evaluation wall time
    params: int  # parameters, embeddings included
    details: dict[str, Any] = field(default_factory=dict)  # train loss at the end, steps, device, threads


# ----------------------------------------------------------------------------- model


def build_model(config: ProxyConfig, vocab_size: int):
    """The random-init proxy (seeded by config.seed), in training mode, on the CPU."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    inter = config.intermediate_size or 4 * config.hidden_size
    if config.arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=inter,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.heads,
            max_position_embeddings=config.seq_len,
            tie_word_embeddings=True,
            use_cache=False,
        )
        cls = LlamaForCausalLM
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            vocab_size=vocab_size,
            n_embd=config.hidden_size,
            n_inner=inter,
            n_layer=config.layers,
            n_head=config.heads,
            n_positions=config.seq_len,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            use_cache=False,
        )
        cls = GPT2LMHeadModel
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(config.seed)
    model = cls(cfg)
    model.train()
    return model


def lr_at(step: int, config: ProxyConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction x lr at the last step."""
    steps = config.steps
    warmup = int(config.warmup_fraction * steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup - 1)
    floor = config.min_lr_fraction
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _windows(tokens: np.ndarray, n_tokens: int, width: int) -> np.ndarray:
    """The first n_tokens + 1 tokens (wrapping round a shorter array) as int64, for `width`-token
    windows that overlap by one token (the next window's first input is this one's last label)."""
    need = n_tokens + 1
    if len(tokens) < 2:
        raise ValueError(f"a proxy needs at least 2 tokens, got {len(tokens)}")
    if len(tokens) >= need:
        return np.asarray(tokens[:need], dtype=np.int64)
    reps = -(-need // len(tokens))
    return np.tile(np.asarray(tokens, dtype=np.int64), reps)[:need]


def evaluate(model, tokens: np.ndarray, config: ProxyConfig, device: str = "cpu") -> float:
    """Mean token cross-entropy (nats) of `model` over the first eval_tokens tokens of `tokens`."""
    import torch
    import torch.nn.functional as F

    n = min(config.eval_tokens, len(tokens) - 1)
    if n < 1:
        raise ValueError(f"a target needs at least 2 tokens, got {len(tokens)}")
    flat = torch.from_numpy(np.asarray(tokens[: n + 1], dtype=np.int64))
    L, full = config.seq_len, n // config.seq_len
    # Full windows in batches, then the shorter last one alone: every one of the n tokens is a label once.
    batches = [(s, min(full, s + config.eval_batch_size), L) for s in range(0, full, config.eval_batch_size)]
    if n > full * L:
        batches.append((full, full + 1, n - full * L))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for first, last, width in batches:
            x = flat[first * L : first * L + (last - first) * width].view(-1, width).to(device)
            y = flat[first * L + 1 : first * L + 1 + (last - first) * width].view(-1, width).to(device)
            logits = model(input_ids=x).logits
            total += float(
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
            )
            count += y.numel()
    model.train(was_training)
    return total / count


def _threads() -> int:
    """The task's CPU slot: the CPUs this process may run on (a Ray task's, a pool worker's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def train_proxy(
    tokens: np.ndarray,
    targets: Mapping[str, np.ndarray],
    config: ProxyConfig,
    device: str = "cpu",
    threads: int | None = None,
) -> ProxyResult:
    """Train a fresh proxy on `tokens` (1-D ids, e.g. a memmap) for config.train_tokens tokens and
    score it on each target's token array. `threads`: torch's intra-op threads (default: the CPUs
    this process may use; a Ray task or pool worker passes its CPU slot)."""
    import torch
    import torch.nn.functional as F

    from mixforge.classify.embed import resolve_device

    started = time.perf_counter()
    device = resolve_device(device)
    torch.set_num_threads(threads or _threads())
    vocab = config.vocab_size or 1 + int(max([np.max(tokens), *(np.max(t) for t in targets.values() if len(t))]))
    model = build_model(config, vocab).to(device)
    params = sum(p.numel() for p in model.parameters())
    L, B, steps = config.seq_len, config.batch_size, config.steps
    n_tokens = steps * B * L
    data = torch.from_numpy(_windows(tokens, n_tokens, L))
    if int(data.max()) >= vocab:
        raise ValueError(f"token id {int(data.max())} is outside the proxy's vocabulary ({vocab})")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    loss = torch.zeros(())
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        # The step's B x L labels follow its inputs by one token: sequence i is tokens [s + i L, s + (i+1) L].
        block = data[step * B * L : (step + 1) * B * L + 1]
        x = block[:-1].view(B, L).to(device, non_blocking=True)
        y = block[1:].view(B, L).to(device, non_blocking=True)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
    train_seconds = time.perf_counter() - started
    losses = {name: evaluate(model, t, config, device) for name, t in targets.items()}
    return ProxyResult(
        losses=losses,
        tokens=n_tokens,
        seconds=time.perf_counter() - started,
        params=params,
        details={
            "final_train_loss": float(loss.detach()),
            "steps": steps,
            "train_seconds": round(train_seconds, 3),
            "device": device,
            "threads": torch.get_num_threads(),
            "vocab_size": vocab,
        },
    )


# ----------------------------------------------------------------------------- vocabulary


def vocab_table(token_arrays: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """Tokeniser id -> proxy id: the vocab_size - 1 most frequent ids over the arrays (ties: the lower
    id first) get 0, 1, ...; every other id gets vocab_size - 1 (out of vocabulary). Built once per
    search (from the pool sample and the targets), so every proxy's losses are over the same ids."""
    size = 1 + max((int(np.max(a)) for a in token_arrays if len(a)), default=0)
    counts = np.zeros(size, dtype=np.int64)
    for a in token_arrays:
        counts += np.bincount(np.asarray(a, dtype=np.int64), minlength=size)
    kept = np.argsort(-counts, kind="stable")[: vocab_size - 1]
    kept = kept[counts[kept] > 0]
    table = np.full(size + 1, vocab_size - 1, dtype=np.uint32)  # the last entry: any id beyond these arrays'
    table[kept] = np.arange(len(kept), dtype=np.uint32)
    return table


def apply_vocab(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`tokens` in proxy ids (an id the table was not built from is out of vocabulary)."""
    return table[np.minimum(np.asarray(tokens, dtype=np.int64), len(table) - 1)]


# ----------------------------------------------------------------------------- token samples


def _as_flat(docs: GroupDocs) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(docs, tuple) and len(docs) == 2 and np.ndim(docs[0]) == 1 and np.ndim(docs[1]) == 1:
        flat, offsets = np.asarray(docs[0]), np.asarray(docs[1], dtype=np.int64)
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must start at 0, not decrease and end at the flat array's length")
        return flat, offsets
    arrays = [np.asarray(d) for d in docs]
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return flat, offsets


def _shares(weights: Mapping[str, float], n_tokens: int) -> dict[str, int]:
    """Tokens per group: weight x n_tokens, rounded so they add up to n_tokens (largest remainders)."""
    names = [g for g, w in weights.items() if w > 0]
    w = np.array([float(weights[g]) for g in names])
    if not names or np.any(w < 0):
        raise ValueError(f"weights must be >= 0 with a positive sum, got {dict(weights)}")
    exact = w / w.sum() * n_tokens
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: n_tokens - int(base.sum())]] += 1
    return dict(zip(names, base.tolist()))


def sample_tokens(
    group_tokens: Mapping[str, GroupDocs],
    weights: Mapping[str, float],
    n_tokens: int,
    seed: int,
    max_repeats: float = 4.0,
    eos_id: int | None = None,
) -> np.ndarray:
    """A proxy's training array of exactly `n_tokens` tokens: each group's share (weights, normalised)
    taken from its documents in a seeded order, a group's documents repeated at most `max_repeats`
    passes (ValueError beyond: the sample would over-repeat it); `eos_id` (if given) after each
    document. The chosen documents (the last of each group cut to fit) are shuffled into one stream."""
    unknown = sorted(set(weights) - set(group_tokens))
    if unknown:
        raise ValueError(f"weights name groups with no documents: {unknown}")
    rng = np.random.default_rng(seed)
    pieces: list[np.ndarray] = []
    for name, need in _shares(weights, n_tokens).items():
        flat, offsets = _as_flat(group_tokens[name])
        sizes = np.diff(offsets) + (eos_id is not None)
        available = int(sizes.sum())
        if need and available == 0:
            raise ValueError(f"group {name!r} has no tokens but weight {weights[name]}")
        if need > max_repeats * available:
            raise ValueError(
                f"group {name!r}: {need} tokens from {available} would repeat it {need / available:.2f} times "
                f"(max_repeats {max_repeats})"
            )
        order = rng.permutation(len(sizes))
        passes = -(-need // available) if need else 0
        chosen = np.concatenate([order] * passes) if passes else order[:0]
        ends = np.cumsum(sizes[chosen])
        last = int(np.searchsorted(ends, need))  # the document in which the group's share runs out
        for i, doc in enumerate(chosen[: last + 1]):
            ids = flat[offsets[doc] : offsets[doc + 1]]
            if eos_id is not None:
                ids = np.append(ids, np.asarray(eos_id, dtype=flat.dtype))
            if i == last:
                ids = ids[: need - (int(ends[last - 1]) if last else 0)]
            if len(ids):
                pieces.append(ids)
    order = rng.permutation(len(pieces))
    out = np.concatenate([pieces[i] for i in order]) if pieces else np.zeros(0, dtype=np.uint32)
    assert len(out) == n_tokens, (len(out), n_tokens)
    return out
