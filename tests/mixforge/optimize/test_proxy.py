"""Proxy models on two synthetic "languages" of tokens (disjoint vocabularies, different grammars):
a tiny proxy learns the one it trains on, and `sample_tokens` assembles training arrays by weight."""

from __future__ import annotations

import numpy as np
import pytest

from mixforge.optimize.proxy import (
    ProxyConfig,
    apply_vocab,
    build_model,
    evaluate,
    lr_at,
    sample_tokens,
    train_proxy,
    vocab_table,
)

VOCAB = 64


def language(seed: int, first_id: int, n: int) -> np.ndarray:
    """A token stream over ids [first_id, first_id + 32): a noisy deterministic successor rule."""
    rng = np.random.default_rng(seed)
    out, x = np.empty(n, dtype=np.uint32), 0
    noise = rng.integers(0, 3, n)
    for i in range(n):
        x = (5 * x + 3 + noise[i]) % 32
        out[i] = first_id + x
    return out


TINY = ProxyConfig(
    hidden_size=32, layers=2, heads=2, seq_len=32, batch_size=8, train_tokens=24_000, lr=1e-2, eval_tokens=2048
)


def test_tiny_proxy_learns_its_own_language_not_the_other():
    train = language(0, 0, 30_000)
    own, other = language(1, 0, 4000), language(2, 32, 4000)
    at_init = evaluate(build_model(TINY, VOCAB), own, TINY)
    result = train_proxy(train, {"own": own, "other": other}, TINY.model_copy(update={"vocab_size": VOCAB}), threads=1)
    assert result.tokens == TINY.steps * TINY.tokens_per_step and 0 < result.seconds < 20
    assert 10_000 < result.params < 100_000
    assert result.details["vocab_size"] == VOCAB and result.details["steps"] == TINY.steps
    # The successor rule leaves ~ln 3 nats per token; at init it is ~ln 64.
    assert at_init > 3.5
    assert result.losses["own"] < 2.0 < at_init
    assert result.losses["own"] < result.losses["other"] - 2.0
    # Same data, config and seed: the same losses (a proxy is a deterministic function of its mixture).
    again = train_proxy(train, {"own": own}, TINY.model_copy(update={"vocab_size": VOCAB}), threads=1)
    assert again.losses["own"] == pytest.approx(result.losses["own"], abs=1e-4)


def test_evaluate_scores_every_token_once():
    model = build_model(TINY, VOCAB)
    tokens = language(3, 0, 101)  # 100 labels: 3 full windows of 32 and one of 4
    whole = evaluate(model, tokens, TINY)
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        x = torch.from_numpy(tokens[:-1].astype(np.int64))[None]
        y = torch.from_numpy(tokens[1:].astype(np.int64))
        # The same windows one by one: position restarts at every window.
        parts = [
            F.cross_entropy(model(input_ids=x[:, s : s + 32]).logits[0], y[s : s + 32], reduction="sum")
            for s in range(0, 100, 32)
        ]
    assert whole == pytest.approx(float(sum(parts)) / 100, rel=1e-4)


def test_learning_rate_warms_up_then_decays():
    cfg = TINY.model_copy(update={"train_tokens": 256 * 100})  # 100 steps, 5 of warm-up
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] < lrs[4] == pytest.approx(cfg.lr)
    assert lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_fraction) and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))


def test_sample_tokens_takes_each_group_by_weight():
    a_docs = [np.full(10, 1, dtype=np.uint32) + np.arange(10, dtype=np.uint32) % 2 for _ in range(20)]  # ids 1, 2
    flat_b = np.full(300, 7, dtype=np.uint32)
    b = (flat_b, np.arange(0, 301, 30, dtype=np.int64))  # 10 docs of id 7, (flat, offsets)
    out = sample_tokens({"a": a_docs, "b": b}, {"a": 3, "b": 1}, n_tokens=400, seed=5)
    assert len(out) == 400 and out.dtype == np.uint32
    assert np.isin(out, [1, 2]).sum() == 300 and (out == 7).sum() == 100
    np.testing.assert_array_equal(out, sample_tokens({"a": a_docs, "b": b}, {"a": 3, "b": 1}, 400, seed=5))
    assert not np.array_equal(out, sample_tokens({"a": a_docs, "b": b}, {"a": 3, "b": 1}, 400, seed=6))
    # Documents are shuffled together, not one group after the other.
    b_at = np.flatnonzero(out == 7)
    assert b_at.max() - b_at.min() + 1 > len(b_at)  # not one contiguous run

    # With eos: every document ends with it (the cut one excepted); repeats beyond the cap are refused.
    with_eos = sample_tokens({"b": b}, {"b": 1}, n_tokens=62, seed=0, eos_id=0)
    assert with_eos.tolist().count(0) == 2
    assert len(sample_tokens({"b": b}, {"b": 1}, n_tokens=1200, seed=0, max_repeats=4)) == 1200
    with pytest.raises(ValueError, match="would repeat it 4.01 times"):
        sample_tokens({"b": b}, {"b": 1}, n_tokens=1203, seed=0, max_repeats=4)
    with pytest.raises(ValueError, match="no documents"):
        sample_tokens({"b": b}, {"c": 1}, n_tokens=10, seed=0)


def test_vocab_table_keeps_the_most_frequent_ids_the_same_for_every_array():
    pool = np.array([5, 5, 5, 9, 9, 2, 7, 1000], dtype=np.uint32)
    target = np.array([9, 3], dtype=np.uint32)
    table = vocab_table([pool, target], vocab_size=4)  # 3 kept ids + 1 for the rest
    # 5 and 9 (3 times each; ties: the lower id first), then 2 (the lowest of the ids seen once).
    np.testing.assert_array_equal(apply_vocab(np.array([5, 9, 2, 7, 3, 1000, 123456]), table), [0, 1, 2, 3, 3, 3, 3])
    assert apply_vocab(pool, table).dtype == np.uint32 and apply_vocab(pool, table).max() < 4
