"""The compiled spaCy-tokenizer loop (`tokenizer_kernel`, issue #20) gives the tokens of the previous Python port
(`previous_spacy_tokenizer.py`, a frozen copy) chunk by chunk, leaves only special-case chunks to the port, and
loads in a fresh worker process."""

from __future__ import annotations

import random

import numpy as np
import polars as pl

from mixforge.executor import Call, LocalPoolExecutor
from mixforge.filters import spacy_tokenizer, tokenizer_kernel
from mixforge.filters.text import _tokens_of
from tests.mixforge.filters import previous_spacy_tokenizer
from tests.mixforge.filters.test_shared_words import _documents

# Pieces chunks are made of: affixes, units and currencies after digits, dot rules (runs, "U.S.", "°F."), the
# infix hyphens and dashes, special cases and their patterns ("''", ":)", "n't"), URLs, e-mail, emoji, CJK,
# combining marks, right-to-left and astral characters.
PIECES = [
    *"aAzZ09.,;:!?'\"()[]{}-_/\\#$%&*+=<>@~`^|…’“”«»°²³€£¥–—·。，ßéΩ中😀©®™",
    *("Mr.", "don't", "n't", ":)", "):", "''", "'''", "'s", "’S", "e.g.", "U.S.", "A.B", "..", "...", "---", "--"),
    *("——", "5", "1990", "km²", "m/s", "km/h", "US$", "C$", "°F.", "°c.", "кг", "кПа", "тбكم", "اكواب", "ml", "th"),
    *("http://", "https://www.", "example.com", "dev@lists.example.org", "192.168.0.1", ":8080/a?b=1#c"),
    *("10a.m", "8-)", "<3", "(:", ";)", "o.O", "Inc", "a.m.", "1st", "e\u0301", "مرحبا", "שלום", "𝔘𝔫𝔦", "🇫🇷"),
    *("x", "Ab", "ab", "word", "Word", "9", "1.5"),
]


def _chunks(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 7))) for _ in range(n)]
    out += [w for doc in _documents(40, seed=seed) for w in doc.split()]
    return list(dict.fromkeys(out))


def _kernel_tokens(chunks: list[str]) -> tuple[list[list[str]], list[int]]:
    back, counts, _, start, end = tokenizer_kernel.tokenize_chunks(chunks)
    off = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for k, c in enumerate(chunks):
        spans = zip(start[off[k] : off[k + 1]].tolist(), end[off[k] : off[k + 1]].tolist())
        out.append([c[a:b] for a, b in spans])
    return out, back


def test_kernel_tokens_equal_the_previous_port():
    chunks = _chunks(20_000, seed=1)
    tokens, back = _kernel_tokens(chunks)
    assert tokenizer_kernel._tables().ok  # the English rule set has the shape the kernel reads
    back_set = set(back)
    assert len(back) < 0.5 * len(chunks)  # fuzzed from special cases: still decided mostly by the kernel
    words = list(dict.fromkeys(w for doc in _documents(40, seed=1) for w in doc.split()))
    assert len(_kernel_tokens(words)[1]) < 0.05 * len(words)  # prose: almost all
    for k, chunk in enumerate(chunks):
        if k not in back_set:
            assert tokens[k] == previous_spacy_tokenizer.tokenize_chunk(chunk), chunk
    # what it leaves to the port is a special case or the pattern of one
    special = spacy_tokenizer.special_case_keys()
    assert any(chunks[k] in special for k in back) or any("''" in chunks[k] for k in back)


def test_words_of_chunks_equal_the_previous_port_in_chunk_order():
    chunks = _chunks(4_000, seed=2) + ["Mr.", "''Hello''", "(ok):", "don't", "5km", "https://x.org/a_b.c"]
    words, counts = _tokens_of(pl.Series("words", chunks))
    expected = [previous_spacy_tokenizer.tokenize_chunk(c) for c in chunks]
    assert counts.tolist() == [len(t) for t in expected]
    assert words.to_list() == [t for ts in expected for t in ts]


def test_hard_cases_and_empty_input():
    hard = ["5km²", "5US$", "5C$", "4th", "1990s", "U.S.A.", "°F.", "45°F.", "a..b", "...", "+5", "+a", "5+5", "a—b"]
    hard += ["a——b", "a---b", "a--b", "a--", "--a", "a~b", "a,b", "a:b", "A.B.", "x.Y", "😀😀", "中文。", "a/b/c.d"]
    tokens, _ = _kernel_tokens(hard)
    for chunk, got in zip(hard, tokens):
        if got:  # not left to the port
            assert got == previous_spacy_tokenizer.tokenize_chunk(chunk), chunk
    back, counts, chunk_of, start, end = tokenizer_kernel.tokenize_chunks([])
    assert back == [] and len(counts) == len(chunk_of) == len(start) == len(end) == 0


def _tokens_in_worker(chunks: list[str]) -> tuple[list[list[str]], int]:
    from mixforge.filters import text

    text.load_tokenizer()
    tokens, back = _kernel_tokens(chunks)
    return tokens, len(back)


def test_kernel_in_a_fresh_worker_process():
    """The cold path: a pool worker loads the compiled loop (numba's disk cache, or compiles it) and gives the
    same tokens."""
    chunks = _chunks(300, seed=3)
    [(tokens, n_back)] = LocalPoolExecutor(1).map(_tokens_in_worker, [Call("chunks", (chunks,))], step="tokenize")
    here, back = _kernel_tokens(chunks)
    assert tokens == here and n_back == len(back) < len(chunks)
