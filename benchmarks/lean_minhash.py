"""Lean reference kernels of mixforge's MinHash signatures and exact-duplicate hash (issue #20).

Both compute, for the default `DedupConfig` only, exactly what mixforge computes (bit for bit):

* exact hash: hash_strings(text lowercased, trimmed, whitespace runs collapsed to one space);
* signature: 112 = 14 x 8 MinHash values (perm_p(x) = A_p * x + B_p mod 2^64) over the shingles of
  the text lowercased with Unicode punctuation deleted and split on Unicode whitespace: word 5-grams
  of the word hashes, or, for documents under 200 words, byte 5-grams of the words joined by single
  spaces (`mixforge.dedup.minhash` has the definition); no word: the all-ones sentinel.

`lean_numpy` is the plain numpy/Arrow way (normalise with Arrow kernels, hash words with a prefix
sum, shingles and minima with whole-array numpy); `lean_numba` is one compiled pass per document
(decode, lowercase, classify, hash words and the exact text as the bytes go by, shingle, min-hash).
They are the yardsticks mixforge's own signature step is measured against
(benchmarks/bench_minhash_kernels.py): leave them as committed.

Lowercasing, Unicode whitespace and punctuation are Arrow's and RE2's per-codepoint definitions,
read off Arrow itself once per process (`char_tables`) so the compiled pass agrees with them.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.dedup.hashing import BASE, LEN_K, MASK64, NULL_HASH, P, Q, splitmix64_stream
from mixforge.dedup.minhash import _CHAR_SALT, _NGRAM_K, _WORD_SALT

NUM_PERM, N, SHORT_WORDS, CHAR_N, SEED = 112, 5, 200, 5, 1
WS, PUNCT = 1, 2  # flag bits of `char_tables`


def perm_params() -> tuple[np.ndarray, np.ndarray]:
    rnd = splitmix64_stream(SEED, 2 * NUM_PERM)
    return np.array([x | 1 for x in rnd[:NUM_PERM]], np.uint64), np.array(rnd[NUM_PERM:], np.uint64)


def ngram_k() -> np.ndarray:
    return np.array([x | 1 for x in _NGRAM_K], np.uint64)


def text_buffers(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets from 0, validity) of a string array."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    if not pa.types.is_large_string(text.type):
        text = text.cast(pa.large_string())
    bufs = text.buffers()
    off = np.frombuffer(bufs[1], np.int64, len(text) + 1, text.offset * 8)
    data = np.frombuffer(bufs[2], np.uint8, int(off[-1])) if bufs[2] is not None else np.zeros(0, np.uint8)
    valid = np.asarray(text.is_valid()) if text.null_count else np.ones(len(text), bool)
    return data[int(off[0]) :], off - off[0], valid


def _all_codepoints() -> tuple[np.ndarray, pa.Array]:
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.int64)
    n = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    off = np.zeros(len(cps) + 1, np.int64)
    np.cumsum(n, out=off[1:])
    data = np.zeros(int(off[-1]), np.uint8)
    lead = np.array([0, 0, 0xC0, 0xE0, 0xF0], np.int64)[n]
    s = off[:-1]
    data[s] = np.where(n == 1, cps, lead | (cps >> (6 * (n - 1))))
    for k in range(1, 4):
        m = n > k
        data[s[m] + k] = 0x80 | ((cps[m] >> (6 * (n[m] - 1 - k))) & 63)
    return cps, pa.Array.from_buffers(pa.large_string(), len(cps), [None, pa.py_buffer(off), pa.py_buffer(data)])


def _decode_single(arr: pa.Array) -> np.ndarray:
    """The one codepoint of each string of `arr` (each is exactly one codepoint)."""
    data, off, _ = text_buffers(arr)
    b = data.astype(np.int64)
    s, n = off[:-1], np.diff(off)
    out = np.where(n == 1, b[s], b[s] & (0xFF >> (n + 1)))
    for k in range(1, 4):
        m = n > k
        out[m] = (out[m] << 6) | (b[s[m] + k] & 63)
    return out


def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """lower[cp] (Arrow's utf8_lower, one codepoint each) and flags[cp] (WS: Arrow's Unicode whitespace,
    PUNCT: RE2's \\p{P}), for every codepoint."""
    cps, arr = _all_codepoints()
    lowered = pc.utf8_lower(arr)
    lower = np.arange(0x110000, dtype=np.int32)
    lower[cps] = _decode_single(lowered)
    flags = np.zeros(0x110000, np.uint8)
    ws = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0).to_numpy(zero_copy_only=False)
    punct = pc.equal(pc.utf8_length(pc.replace_substring_regex(arr, r"\p{P}+", "")), 0).to_numpy(zero_copy_only=False)
    flags[cps[ws]] |= WS
    flags[cps[punct]] |= PUNCT
    return lower, flags


# ----------------------------------------------------------------------------------------------- numpy


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * np.uint64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> np.uint64(27))
        z = z * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_CHUNK = 1 << 20
_QP = np.cumprod(np.r_[np.uint64(1), np.full(_CHUNK + 1, Q, np.uint64)], dtype=np.uint64)
_PP = np.cumprod(np.r_[np.uint64(1), np.full(_CHUNK + 1, P, np.uint64)], dtype=np.uint64)


def _hash_segments(data: np.ndarray, off: np.ndarray) -> np.ndarray:
    """hash_strings of each data[off[i]:off[i+1]]: poly = P^end * (S[end] - S[start]), S a prefix sum,
    over about 1 MB of strings at a time."""
    out = np.empty(len(off) - 1, np.uint64)
    i = 0
    with np.errstate(over="ignore"):
        while i < len(out):
            j = min(max(int(np.searchsorted(off, off[i] + _CHUNK, "right")) - 1, i + 1), len(out))
            o = off[i : j + 1] - off[i]
            seg = data[off[i] : off[j]]
            m = len(seg)
            qp, pp = (_QP, _PP) if m <= _CHUNK else (_powers(Q, m + 1), _powers(P, m + 1))
            s = np.zeros(m + 1, np.uint64)
            np.cumsum((seg.astype(np.uint64) + np.uint64(1)) * qp[:m], out=s[1:])
            out[i:j] = (s[o[1:]] - s[o[:-1]]) * pp[o[1:]]
            i = j
        out += np.diff(off).astype(np.uint64) * np.uint64(LEN_K) + np.uint64(BASE)
    return _mix(out)


def _powers(base: int, n: int) -> np.ndarray:
    return np.cumprod(np.r_[np.uint64(1), np.full(n - 1, base, np.uint64)], dtype=np.uint64)


def _ngrams(tok: np.ndarray, off: np.ndarray, n: int, salt: int, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(off)
    n_eff = np.minimum(n, lengths)
    counts = np.where(lengths > 0, lengths - n_eff + 1, 0)
    sh_off = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(counts, out=sh_off[1:])
    doc = np.repeat(np.arange(len(lengths)), counts)
    start = np.arange(sh_off[-1]) - sh_off[:-1][doc] + off[:-1][doc]
    ne = n_eff[doc]
    acc = np.zeros(len(start), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            use = ne > j
            acc[use] += tok[start[use] + j] * k[j]
        acc ^= np.uint64(salt)
        acc += ne.astype(np.uint64)
    return _mix(acc), sh_off


def lean_numpy(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint64 (n, 112), exact hashes uint64 (n,)) with Arrow kernels and whole-array numpy."""
    a, b, k = perm_params()[0], perm_params()[1], ngram_k()
    low = pc.utf8_lower(text.cast(pa.large_string()))
    joined = joined_words(pc.utf8_trim_whitespace(low))
    data, off, valid = text_buffers(joined)
    exact = _hash_segments(data, off)
    exact[~valid] = np.uint64(NULL_HASH)
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.fill_null(low, ""), r"\p{P}+", ""))
    split = pc.utf8_split_whitespace(norm)
    words = pc.list_flatten(split)
    n_words = pc.list_value_length(split).to_numpy().astype(np.int64)
    n_words[pc.equal(pc.utf8_length(norm), 0).to_numpy(zero_copy_only=False)] = 0
    w_data, w_off, _ = text_buffers(pc.filter(words, pc.greater(pc.utf8_length(words), 0)))
    w_hash = _hash_segments(w_data, w_off)
    doc_off = np.zeros(len(n_words) + 1, np.int64)
    np.cumsum(n_words, out=doc_off[1:])
    short = n_words < SHORT_WORDS
    # word docs: their word hashes; short docs: the bytes of their words joined by spaces
    word_doc = np.repeat(~short, n_words)
    wl = np.diff(doc_off)
    wd_off = np.zeros(len(n_words) + 1, np.int64)
    np.cumsum(np.where(short, 0, wl), out=wd_off[1:])
    sh_w, shoff_w = _ngrams(w_hash[word_doc], wd_off, N, _WORD_SALT, k)
    c_data, c_off, _ = text_buffers(pc.if_else(pa.array(short), joined_words(norm), ""))
    sh_c, shoff_c = _ngrams(c_data.astype(np.uint64) + np.uint64(1), c_off, CHAR_N, _CHAR_SALT, k)
    counts = np.diff(shoff_w) + np.diff(shoff_c)  # a document has shingles of one kind only
    sh = np.empty(int(counts.sum()), np.uint64)
    offs = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offs[1:])
    for d_sh, d_off in ((sh_w, shoff_w), (sh_c, shoff_c)):
        c = np.diff(d_off)
        sh[np.repeat(offs[:-1] - d_off[:-1], c) + np.arange(len(d_sh))] = d_sh
    sig = np.full((len(counts), NUM_PERM), np.uint64(MASK64), np.uint64)
    buf = np.empty((NUM_PERM, 8192), np.uint64)
    with np.errstate(over="ignore"):
        i, n_docs = 0, len(counts)
        while i < n_docs:  # blocks of about 8192 shingles: bounded (112 x shingles) temporaries
            j = min(max(int(np.searchsorted(offs, offs[i] + 8192, "right")) - 1, i + 1), n_docs)
            docs = i + np.flatnonzero(counts[i:j])
            if len(docs):
                lo, hi = offs[i], offs[j]
                h = buf[:, : hi - lo] if hi - lo <= 8192 else np.empty((NUM_PERM, hi - lo), np.uint64)
                np.multiply(a[:, None], sh[None, lo:hi], out=h)
                h += b[:, None]
                sig[docs] = np.minimum.reduceat(h, offs[docs] - lo, axis=1).T
            i = j
    return sig, exact


def joined_words(text: pa.Array) -> pa.Array:
    return pc.binary_join(pc.utf8_split_whitespace(text), pa.scalar(" ", pa.large_string()))


# ----------------------------------------------------------------------------------------------- numba

u64 = np.uint64
P_, LEN_K_, BASE_, NULL_, MASK_ = u64(P), u64(LEN_K), u64(BASE), u64(NULL_HASH), u64(MASK64)
WSALT, CSALT, ONE, SPACE = u64(_WORD_SALT), u64(_CHAR_SALT), u64(1), u64(32)
M1, M2 = u64(0xBF58476D1CE4E5B9), u64(0x94D049BB133111EB)
S30, S27, S31 = u64(30), u64(27), u64(31)


@numba.njit(inline="always")
def mix(z):
    z = (z ^ (z >> S30)) * M1
    z = (z ^ (z >> S27)) * M2
    return z ^ (z >> S31)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def kernel(data, off, valid, lower, flags, a, b, k, sig, exact):
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
            exact[d] = NULL_
            sig[d, :] = MASK_
            continue
        eh, elen, epend = u64(0), 0, False
        wh, wlen, nw, nc = u64(0), 0, 0, 0
        i, e = off[d], off[d + 1]
        while i < e:
            c = np.int64(data[i])
            if c < 0x80:
                cp = c
                i += 1
            elif c < 0xE0:
                cp = ((c & 0x1F) << 6) | (data[i + 1] & 0x3F)
                i += 2
            elif c < 0xF0:
                cp = ((c & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
                i += 3
            else:
                cp = ((c & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
                cp |= data[i + 3] & 0x3F
                i += 4
            lc = np.int64(lower[cp])
            f = flags[lc]
            if f & WS:
                epend = elen > 0
                if wlen > 0:
                    words[nw] = mix(wh + u64(wlen) * LEN_K_ + BASE_)
                    nw += 1
                    wh, wlen = u64(0), 0
                continue
            if lc < 0x80:
                enc[0] = lc
                nb = 1
            elif lc < 0x800:
                enc[0], enc[1] = 0xC0 | (lc >> 6), 0x80 | (lc & 63)
                nb = 2
            elif lc < 0x10000:
                enc[0], enc[1], enc[2] = 0xE0 | (lc >> 12), 0x80 | ((lc >> 6) & 63), 0x80 | (lc & 63)
                nb = 3
            else:
                enc[0], enc[1] = 0xF0 | (lc >> 18), 0x80 | ((lc >> 12) & 63)
                enc[2], enc[3] = 0x80 | ((lc >> 6) & 63), 0x80 | (lc & 63)
                nb = 4
            if epend:
                eh = (eh + SPACE + ONE) * P_
                elen += 1
                epend = False
            for j in range(nb):
                eh = (eh + u64(enc[j]) + ONE) * P_
            elen += nb
            if f & PUNCT:
                continue
            if wlen == 0 and nw > 0:
                chars[nc] = 32
                nc += 1
            for j in range(nb):
                wh = (wh + u64(enc[j]) + ONE) * P_
                chars[nc + j] = enc[j]
            wlen += nb
            nc += nb
        if wlen > 0:
            words[nw] = mix(wh + u64(wlen) * LEN_K_ + BASE_)
            nw += 1
        exact[d] = mix(eh + u64(elen) * LEN_K_ + BASE_)
        if nw == 0:
            sig[d, :] = MASK_
            continue
        if nw < SHORT_WORDS:
            n = min(CHAR_N, nc)
            ns = nc - n + 1
            for s in range(ns):
                acc = u64(0)
                for j in range(n):
                    acc += (u64(chars[s + j]) + ONE) * k[j]
                sh[s] = mix((acc ^ CSALT) + u64(n))
        else:
            n = N
            ns = nw - n + 1
            for s in range(ns):
                acc = u64(0)
                for j in range(n):
                    acc += words[s + j] * k[j]
                sh[s] = mix((acc ^ WSALT) + u64(n))
        for p in range(num_perm):
            ap, bp, m = a[p], b[p], MASK_
            for s in range(ns):
                v = ap * sh[s] + bp
                m = min(m, v)
            sig[d, p] = m
    return 0


_TABLES = None


def lean_numba(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, exact hashes) in one compiled pass per document (compiles/loads on first call)."""
    global _TABLES
    if _TABLES is None:
        _TABLES = char_tables()
    data, off, valid = text_buffers(text)
    a, b = perm_params()
    sig = np.empty((len(off) - 1, NUM_PERM), np.uint64)
    exact = np.empty(len(off) - 1, np.uint64)
    kernel(data, off, valid, _TABLES[0], _TABLES[1], a, b, ngram_k(), sig, exact)
    return sig, exact
