"""The compiled signature kernel gives the same signatures and exact hashes as the Arrow/numpy
definitions (`MinHasher.signatures`, `exact_hashes`), bit for bit, so existing dedup indexes stay valid."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from mixforge.dedup import kernel as K
from mixforge.dedup.config import ExactConfig, MinHashConfig
from mixforge.dedup.hashing import exact_hashes
from mixforge.dedup.minhash import MinHasher
from mixforge.executor import Call, LocalPoolExecutor
from tests.helpers import prose

# Unicode the tables must get right: case pairs of changing UTF-8 length (Ⱥ -> ⱥ is 2 -> 3 bytes),
# İ, final sigma, NBSP/line separator/NEL whitespace, non-ASCII punctuation and digits, emoji, NUL.
TRICKY = [
    None,
    "",
    "   \n\t",
    "!!! ... ,,,",
    "x",
    "Ǆ İstanbul ÀÉ ẞ ΣΑΣ ΟΔΟΣ\u00a0x\u2028y\u0085z — “quoted” «guillemets» 12 ٣٤ ３ Ⱥȿ",
    "a-b c,d  e\t\nf\u200bg",
    "🙂 x 🙂\x00y",
    " - a  -b 1 2 ",
    "Дом, милый ДОМ! 漢字、かな。",
]


def corpus(seed: int, n: int = 60) -> list[str | None]:
    """Real-looking documents: prose of every length (short docs take the char path), near-copies, TRICKY."""
    rng = random.Random(seed)
    docs: list[str | None] = []
    for i in range(n):
        text = prose(seed * 1000 + i, sentences=rng.choice([1, 3, 12, 25, 40]))
        if rng.random() < 0.3:
            text = text.upper() if rng.random() < 0.5 else text.replace(" ", "\n\n", 3)
        docs.append(text)
        if rng.random() < 0.3:
            docs.append(text.replace("the", "a", 2) + " " + rng.choice(TRICKY[5:]))
    docs += TRICKY
    rng.shuffle(docs)
    return docs


CONFIGS = [
    (MinHashConfig(), ExactConfig()),
    (MinHashConfig(short_doc_strategy="none", lowercase=False), ExactConfig(strip_punctuation=True)),
    (MinHashConfig(short_doc_strategy="smaller_n", strip_punctuation=False), ExactConfig(normalize_digits=True)),
    (MinHashConfig(shingle="char", short_doc_words=30), ExactConfig(lowercase=False, collapse_whitespace=False)),
    (MinHashConfig(n=3, bands=4, rows=3, seed=9, short_doc_words=0), ExactConfig(strip_punctuation=True)),
]


@pytest.mark.parametrize("mh_cfg,ex_cfg", CONFIGS)
def test_kernel_equals_definition_bit_for_bit(mh_cfg, ex_cfg):
    texts = corpus(1)
    arr = pa.array(texts)
    hasher = MinHasher(mh_cfg)
    want_sig, want_exact = hasher.signatures(arr), exact_hashes(arr, ex_cfg)
    sig, exact = K.sign(arr, hasher, ex_cfg)
    assert sig.dtype == np.uint64 and sig.shape == (len(texts), mh_cfg.num_perm)
    assert np.array_equal(sig, want_sig)
    assert np.array_equal(exact, want_exact)
    # every Arrow layout of the same strings, and without MinHash
    for other in (
        pa.array(texts, pa.large_string()),
        pa.array(texts, pa.string_view()),
        pa.chunked_array([texts[:17], texts[17:]], pa.string()),
    ):
        s, e = K.sign(other, hasher, ex_cfg)
        assert np.array_equal(s, want_sig) and np.array_equal(e, want_exact)
    s, e = K.sign(pa.array(texts).slice(5, 20), hasher, ex_cfg)
    assert np.array_equal(s, want_sig[5:25]) and np.array_equal(e, want_exact[5:25])
    none, e = K.sign(arr, None, ex_cfg)
    assert none is None and np.array_equal(e, want_exact)
    assert len(K._sign.signatures) == 1  # every layout, nulls or not, runs the same compiled code (no recompiles)


def test_kernel_pinned_values_and_edges():
    t = pa.array(["The quick brown fox jumps over the lazy dog. " * 30, "Short text, five words here."])
    sig, _ = K.sign(t, MinHasher(), ExactConfig())
    assert sig[0, :3].tolist() == [2621024360111904163, 1496978387866095603, 4411092471998211167]
    assert sig[1, :3].tolist() == [1577254960223399544, 766549077483127045, 1974108790391084882]
    sig, exact = K.sign(pa.array([], pa.string()), MinHasher(), ExactConfig())
    assert sig.shape == (0, 112) and len(exact) == 0
    sig, exact = K.sign(pa.nulls(2, pa.string()), MinHasher(), ExactConfig())
    assert (sig == np.uint64(2**64 - 1)).all() and exact.tolist() == exact_hashes(pa.nulls(2, pa.string())).tolist()


def test_kernel_tables_agree_with_arrow():
    lower, flags = K.char_tables()
    assert lower[ord("Ⱥ")] == ord("ⱥ") and lower[ord("A")] == ord("a") and lower[ord("ß")] == ord("ß")
    assert flags[0xA0] & K.WS and flags[0x2028] & K.WS and not flags[0x200B] & K.WS
    assert flags[ord("«")] & K.PUNCT and not flags[ord("$")] & K.PUNCT and flags[0x663] & K.DIGIT


def _sign_in_worker(texts: list[str | None]) -> tuple[bytes, bytes]:
    sig, exact = K.sign(pa.array(texts), MinHasher(), ExactConfig())
    return sig.tobytes(), exact.tobytes()


def test_kernel_in_a_fresh_worker_process():
    """The cold path: a pool worker imports the kernel (loading or compiling it) and gives the same bytes."""
    texts = corpus(2, 20)
    arr = pa.array(texts)
    [(sig, exact)] = LocalPoolExecutor(1).map(_sign_in_worker, [Call("batch", (texts,))], step="sign")
    assert sig == MinHasher().signatures(arr).tobytes()
    assert exact == exact_hashes(arr).tobytes()
