"""The signature step's compiled kernel: MinHash signatures and the exact-duplicate hash of a batch
in one pass over its UTF-8 bytes (numba).

Per document, as the bytes go by: decode each codepoint, lowercase it, classify it (whitespace,
punctuation, digit), feed it to the exact hash of the exact-normalised text and to the hash of the
current MinHash word; at the end, shingle (word n-grams of the word hashes, or byte n-grams of the
words joined by single spaces) and take the minimum of every permutation. The text is read once,
never copied, lowercased or split into Arrow arrays.

The definitions are those of `hashing` (hash_strings, normalize_text, exact_hashes) and `minhash`
(MinHasher.signatures), for every config; tests compare the two bit for bit, so the signatures and
exact hashes stored in dedup indexes stay valid. Lowercasing, Unicode whitespace, punctuation
(RE2's \\p{P}) and decimal digits (\\p{Nd}) are per-codepoint tables read off Arrow itself
(`chartables.char_tables`, cached on disk beside the compiled code), so they agree with the Arrow kernels
the definitions are written with.

Compiled code is cached on disk (numba `cache=True`: next to this file, or in the user's cache
directory when that is read-only), so a worker process loads it instead of compiling it again.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

from mixforge.dedup.chartables import DIGIT, PUNCT, WS, char_tables
from mixforge.dedup.config import ExactConfig
from mixforge.dedup.hashing import BASE, LEN_K, MASK64, NULL_HASH, P, _string_buffers
from mixforge.dedup.minhash import _CHAR_SALT, _NGRAM_K, _WORD_SALT, MinHasher

_STRATEGY = {"none": 0, "char": 1, "smaller_n": 2}

_u64 = np.uint64
_P, _LEN_K, _BASE, _NULL, _MASK = _u64(P), _u64(LEN_K), _u64(BASE), _u64(NULL_HASH), _u64(MASK64)
_WSALT, _CSALT, _ONE, _SPACE = _u64(_WORD_SALT), _u64(_CHAR_SALT), _u64(1), _u64(32)
_M1, _M2, _S30, _S27, _S31 = _u64(0xBF58476D1CE4E5B9), _u64(0x94D049BB133111EB), _u64(30), _u64(27), _u64(31)
_K = np.array([x | 1 for x in _NGRAM_K], np.uint64)


@numba.njit(inline="always")
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always")
def _encode(cp, enc):
    """UTF-8 bytes of `cp` into enc; returns their number."""
    if cp < 0x80:
        enc[0] = cp
        return 1
    if cp < 0x800:
        enc[0], enc[1] = 0xC0 | (cp >> 6), 0x80 | (cp & 63)
        return 2
    if cp < 0x10000:
        enc[0], enc[1], enc[2] = 0xE0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)
        return 3
    enc[0], enc[1], enc[2], enc[3] = (
        0xF0 | (cp >> 18),
        0x80 | ((cp >> 12) & 63),
        0x80 | ((cp >> 6) & 63),
        0x80 | (cp & 63),
    )
    return 4


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _sign(data, off, valid, lower, flags, a, b, k, opts, sig, exact):  # noqa: C901 - one pass, on purpose
    """Fill sig (n, num_perm) and exact (n,); returns -1, or the first document with truncated UTF-8."""
    do_mh, mh_lower, mh_strip, char_all = opts[0] != 0, opts[1] != 0, opts[2] != 0, opts[3] != 0
    n_word, short_words, strategy, short_char_n, short_n = opts[4], opts[5], opts[6], opts[7], opts[8]
    ex_lower, ex_strip, ex_digits, ex_collapse = opts[9] != 0, opts[10] != 0, opts[11] != 0, opts[12] != 0
    n_docs = len(off) - 1
    num_perm = len(a)
    longest = 0
    for d in range(n_docs):
        longest = max(longest, off[d + 1] - off[d])
    words = np.empty(longest + 1, np.uint64)
    chars = np.empty(2 * longest + 8, np.uint8)  # lowercasing can turn 2 bytes into 3
    sh = np.empty(2 * longest + 8, np.uint64)
    enc = np.empty(4, np.uint8)
    for d in range(n_docs):
        if not valid[d]:
            exact[d] = _NULL
            if do_mh:
                sig[d, :] = _MASK
            continue
        eh, elen, epend = _u64(0), 0, False
        wh, wlen, nw, nc = _u64(0), 0, 0, 0
        i, e = off[d], off[d + 1]
        while i < e:
            c = np.int64(data[i])
            if c < 0x80:
                cp = c
                i += 1
            elif c < 0xE0:
                if i + 2 > e:
                    return d
                cp = ((c & 0x1F) << 6) | (data[i + 1] & 0x3F)
                i += 2
            elif c < 0xF0:
                if i + 3 > e:
                    return d
                cp = ((c & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
                i += 3
            else:
                if i + 4 > e:
                    return d
                cp = ((c & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
                cp |= data[i + 3] & 0x3F
                i += 4
            # exact hash: lowercase, delete punctuation, digits -> 0, trim and collapse whitespace
            ce = np.int64(lower[cp]) if ex_lower else cp
            fe = flags[ce]
            if ex_collapse and fe & WS:
                epend = elen > 0
            elif not (ex_strip and fe & PUNCT):
                if ex_digits and fe & DIGIT:
                    ce = 48
                if epend:
                    eh = (eh + _SPACE + _ONE) * _P
                    elen += 1
                    epend = False
                nb = _encode(ce, enc)
                for j in range(nb):
                    eh = (eh + _u64(enc[j]) + _ONE) * _P
                elen += nb
            if not do_mh:
                continue
            # MinHash words: lowercase, delete punctuation, split on whitespace
            cm = np.int64(lower[cp]) if mh_lower else cp
            fm = flags[cm]
            if fm & WS:
                if wlen > 0:
                    words[nw] = _mix(wh + _u64(wlen) * _LEN_K + _BASE)
                    nw += 1
                    wh, wlen = _u64(0), 0
                continue
            if mh_strip and fm & PUNCT:
                continue
            if wlen == 0 and nw > 0:
                chars[nc] = 32
                nc += 1
            nb = _encode(cm, enc)
            for j in range(nb):
                wh = (wh + _u64(enc[j]) + _ONE) * _P
                chars[nc + j] = enc[j]
            wlen += nb
            nc += nb
        exact[d] = _mix(eh + _u64(elen) * _LEN_K + _BASE)
        if not do_mh:
            continue
        if wlen > 0:
            words[nw] = _mix(wh + _u64(wlen) * _LEN_K + _BASE)
            nw += 1
        if nw == 0:
            sig[d, :] = _MASK
            continue
        short = strategy != 0 and nw < short_words
        if char_all or (short and strategy == 1):
            n = (short_char_n if short else n_word) if char_all else short_char_n
            n = min(n, nc)
            ns = nc - n + 1
            for s in range(ns):
                acc = _u64(0)
                for j in range(n):
                    acc += (_u64(chars[s + j]) + _ONE) * k[j]
                sh[s] = _mix((acc ^ _CSALT) + _u64(n))
        else:
            n = short_n if (short and strategy == 2) else n_word
            n = min(n, nw)
            ns = nw - n + 1
            for s in range(ns):
                acc = _u64(0)
                for j in range(n):
                    acc += words[s + j] * k[j]
                sh[s] = _mix((acc ^ _WSALT) + _u64(n))
        for p in range(num_perm):  # a scalar minimum per permutation: the shingle loop vectorises
            ap, bp, m = a[p], b[p], _MASK
            for s in range(ns):
                m = min(m, ap * sh[s] + bp)
            sig[d, p] = m
    return -1


def _readonly(x: np.ndarray) -> np.ndarray:
    """A read-only view: Arrow's buffers are read-only, numba types them apart from writable arrays."""
    x = x.view()
    x.flags.writeable = False
    return x


def sign(
    text: pa.Array | pa.ChunkedArray, hasher: MinHasher | None, exact: ExactConfig
) -> tuple[np.ndarray | None, np.ndarray]:
    """(MinHash signatures uint64 (n, num_perm), or None without a `hasher`; exact hashes uint64 (n,)).

    Equal to `hasher.signatures(text)` and `exact_hashes(text, exact)`, bit for bit."""
    offsets, data, valid = _string_buffers(text)
    n = len(offsets) - 1
    if valid is None:
        valid = np.ones(n, bool)
    data, offsets, valid = (_readonly(x) for x in (data, offsets, valid))  # one compiled signature, not four
    lower, flags = char_tables()
    if hasher is not None:
        minhash = hasher.cfg
        a, b, num_perm = hasher._a, hasher._b, minhash.num_perm
        opts_mh = [
            1,
            minhash.lowercase,
            minhash.strip_punctuation,
            minhash.shingle == "char",
            minhash.n,
            minhash.short_doc_words,
            _STRATEGY[minhash.short_doc_strategy],
            minhash.short_char_n,
            minhash.short_n,
        ]
    else:
        a = b = np.zeros(0, np.uint64)
        num_perm, opts_mh = 0, [0] * 9
    opts = np.array(
        opts_mh + [exact.lowercase, exact.strip_punctuation, exact.normalize_digits, exact.collapse_whitespace],
        np.int64,
    )
    sig = np.empty((n, num_perm), np.uint64)
    hashes = np.empty(n, np.uint64)
    bad = _sign(data, offsets, valid, lower, flags, a, b, _K, opts, sig, hashes)
    if bad >= 0:
        raise ValueError(f"invalid UTF-8 in document {bad} of the batch (a truncated multi-byte sequence)")
    return (sig if hasher is not None else None), hashes
