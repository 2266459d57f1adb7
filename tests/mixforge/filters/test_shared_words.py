"""The optimised word splitting and the shared, cut-down segmentations (issue #20) give the features and
decisions of the previous implementation (`previous_text.py`, a frozen copy), feature by feature."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from mixforge.filters import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from mixforge.filters.text import TextBatch, split_words
from tests.helpers import prose
from tests.mixforge.filters import previous_gopher_repetition, previous_text

# Public-domain prose (Pride and Prejudice) and the shapes web and documentation text is made of.
AUSTEN = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    'the rightful property of some one or other of their daughters. "My dear Mr. Bennet," said his lady to him '
    'one day, "have you heard that Netherfield Park is let at last?" Mr. Bennet replied that he had not. '
    '"But it is," returned she; "for Mrs. Long has just been here, and she told me all about it."--but '
    "her;--but he made no answer. Don't you want to know who has taken it?"
)
PIECES = [
    "See https://example.org/a/b?x=1&y=2 (e.g. the 3.5% case) or mail <dev@lists.example.org>.",
    "* item one\n* item two\n- item three...\n• bullet four …",
    "[[Wikipedia|link]] '''bold''' {{cite web|title=Arthur|year=1959}} [1] [citation needed]",
    "libs/boost/test/foo_bar.cpp: fixed bug #15502; see 2021-12-16 release notes (v2.1.0-rc1).",
    "U.S. Inc. Ph.D. can't won't y'all o'clock 1990s, 12:30pm $200,000 well-known prefer—you",
    "Copyright (C) 2001-2024 Free Software Foundation, Inc.\n\nPermission is granted to copy.",
    "function f(x) { return x + 1; } // javascript here",
    "Lorem ipsum dolor sit amet.",
    "",
    "   \n\n  ",
]


def _documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    sentences = AUSTEN.split(". ")
    docs = []
    for _ in range(n):
        paragraphs = []
        for _k in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.4:
                paragraphs.append(prose(rng.randrange(10**6), rng.randint(1, 6)))
            elif kind < 0.7:
                paragraphs.append(". ".join(rng.sample(sentences, rng.randint(1, len(sentences)))))
            else:
                paragraphs.append(rng.choice(PIECES))
        if rng.random() < 0.2:  # repeated paragraphs and lines (repetition rules)
            paragraphs += paragraphs[: rng.randint(1, len(paragraphs))]
        docs.append(("\n\n" if rng.random() < 0.6 else "\n").join(paragraphs))
    docs[3] = "我用Python写代码(e.g. don't)。今天天气很好。"
    return docs


def _lang(n: int) -> pa.Array:
    return pa.array(["zh" if i == 3 else ("en" if i % 4 else None) for i in range(n)], pa.string())


def _batches(docs, lang):
    text = pa.array(docs, pa.large_string())
    return TextBatch(text, lang=lang), previous_text.TextBatch(text, lang=lang)


def test_words_equal_the_previous_implementation():
    docs = _documents(300)
    new, old = _batches(docs, _lang(len(docs)))
    assert new.words.values.to_list() == old.words.values.to_list()
    assert new.words.counts.tolist() == old.words.counts.tolist()
    # without a language, and on text whose chunks are all plain words (the shortcut)
    for text in (pl.Series(docs), pl.Series(["plain words only", "", "and more words"])):
        w_new, c_new = split_words(text)
        w_old, c_old = previous_text.split_words(text)
        assert w_new.to_list() == w_old.to_list() and c_new.tolist() == c_old.tolist()


@pytest.mark.parametrize("rule_set", [GopherRepetition, GopherQuality, FineWebQuality, C4Quality])
def test_features_and_decisions_equal_the_previous_implementation(rule_set):
    docs = _documents(300, seed=1)
    new, old = _batches(docs, _lang(len(docs)))
    rs = rule_set()
    ev_new, ev_old = rs.evaluate_batch(new), rs.evaluate_batch(old)
    assert list(ev_new.features) == list(ev_old.features)
    for name in ev_new.features:  # column by column
        np.testing.assert_array_equal(ev_new.features[name], ev_old.features[name], err_msg=name)
    assert list(ev_new.fails) == list(ev_old.fails)
    for name in ev_new.fails:
        np.testing.assert_array_equal(ev_new.fails[name], ev_old.fails[name], err_msg=name)
    assert ev_new.fails and any(f.any() for f in ev_new.fails.values())  # the text exercises the rules
    assert (ev_new.first_failure() == ev_old.first_failure()).all()


@pytest.mark.parametrize("exact", [False, True])
def test_sparse_n_grams_equal_the_previous_gopher_repetition(exact):
    from mixforge.filters.config import GopherRepetitionConfig

    docs = _documents(300, seed=3)
    # long repetitive documents: dup_<n>_gram above its threshold, greedy scans
    docs += [" ".join(["the cat sat on the mat"] * k + [prose(k)]) for k in range(1, 40, 3)]
    batch = TextBatch(pa.array(docs, pa.large_string()), lang=None)
    config = GopherRepetitionConfig(exact_dup_n_gram_features=exact)
    ev_new = GopherRepetition(config).evaluate_batch(batch)
    ev_old = previous_gopher_repetition.GopherRepetition(config).evaluate_batch(batch)
    for name in ev_old.features:
        np.testing.assert_array_equal(ev_new.features[name], ev_old.features[name], err_msg=name)
    for name in ev_old.fails:
        np.testing.assert_array_equal(ev_new.fails[name], ev_old.fails[name], err_msg=name)
    assert ev_new.fails["gopher_repetition.dup_5_gram"].any() and ev_new.fails["gopher_repetition.top_2_gram"].any()


def _assert_same_segmentations(a: TextBatch, b: TextBatch) -> None:
    assert a.text_arrow.to_pylist() == b.text_arrow.to_pylist()
    for name in ("words", "lines", "newline_lines"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.values.to_list() == y.values.to_list(), name
        assert x.doc.tolist() == y.doc.tolist() and x.counts.tolist() == y.counts.tolist(), name
    for name in ("char_len", "newline_count", "word_len", "word_hash", "unspaced"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_a_batch_cut_down_to_survivors_and_edited_equals_a_fresh_one():
    docs = _documents(120, seed=2)
    lang = _lang(len(docs))
    batch = TextBatch(pa.array(docs, pa.large_string()), lang=lang)
    for name in TextBatch._PER_DOC + TextBatch._SEGMENTS + TextBatch._PER_WORD:
        getattr(batch, name)  # computed once, on the whole batch
    survivors = np.flatnonzero(np.arange(len(docs)) % 3 != 1)
    sub = batch.take(survivors)
    assert sub.__dict__["words"] is not None  # carried over, not recomputed
    _assert_same_segmentations(sub, TextBatch(pa.array([docs[i] for i in survivors]), lang=lang.take(survivors)))
    assert batch.take(np.arange(len(docs))) is batch
    # an editing rule set (C4) rewrote some of the survivors: only those are segmented again
    rows = np.array([0, 5, 6, 40])
    edited = [docs[survivors[r]][: len(docs[survivors[r]]) // 2] for r in rows]
    out = sub.replace(rows, pa.array(edited))
    expected = [docs[i] for i in survivors]
    for r, t in zip(rows, edited):
        expected[r] = t
    _assert_same_segmentations(out, TextBatch(pa.array(expected), lang=lang.take(survivors)))
    # rule sets on the shared batch decide as on a fresh one
    for rs in (GopherQuality(), FineWebQuality()):
        fresh = rs.evaluate_batch(TextBatch(pa.array(expected), lang=lang.take(survivors)))
        shared = rs.evaluate_batch(out)
        for name in fresh.features:
            np.testing.assert_array_equal(shared.features[name], fresh.features[name], err_msg=name)


def test_suffix_pre_check_keeps_the_tokens_of_the_previous_port():
    from mixforge.filters import spacy_tokenizer
    from tests.mixforge.filters import previous_spacy_tokenizer

    end = spacy_tokenizer._suffix_end_check()
    assert end is not None  # the English suffix pattern has the expected shape: the pre-check is on
    assert end("9") is None and end("/") is None and end(")") and end(".") and end("²")
    rng = random.Random(4)
    pool = "aAzZ09.,;:!?'\"()[]{}-_/\\#$%&*+=<>@~`^|…’“”«»°²³km€£¥–—·。，ßé"
    chunks = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 10))) for _ in range(6000)]
    chunks += [
        n + u for n in ("5", "3.5", "1990") for u in ("km", "km²", "kg", "%", "$", "US$", "°C.", "+", "'s", ".")
    ]
    chunks += [w for doc in _documents(60, seed=5) for w in doc.split()]
    for chunk in chunks:
        assert spacy_tokenizer.tokenize_chunk(chunk) == previous_spacy_tokenizer.tokenize_chunk(chunk), chunk
