"""MinHash signatures and LSH band hashes, vectorised over whole Arrow batches.

Pipeline for a batch of documents (no Python loop over documents anywhere):

1. normalise (`hashing.normalize_text`: lowercase, delete punctuation, collapse whitespace);
2. split on whitespace (`pc.utf8_split_whitespace`) and hash every word (`hash_strings`);
3. shingles: the hash of each run of n consecutive words of one document,
   mix64(sum_k word[i+k] * C_k) -- no shingle crosses a document boundary. A document with
   fewer than n words is one shingle of all its words;
4. signature[d, p] = min over the document's shingles s of perm_p(s), with
   perm_p(x) = A_p * x + B_p mod 2^64 (A_p odd, so each perm_p is a bijection of uint64);
   A, B come from splitmix64(seed), defined in this package, so they never change.
   Computed with `np.minimum.reduceat` over shingle offsets, ~2^13 shingles at a time.

Short documents (fewer than `short_doc_words` words) lose the most recall under word 5-grams:
in a 30-word document, two replaced words remove ~10 of 26 shingles (Jaccard ~0.44, never a
candidate at threshold 0.8). Under the default 'char' strategy they are shingled into byte
`short_char_n`-grams of their normalised text instead (words joined by single spaces): the same
two edits give Jaccard ~0.8, and a one-letter typo costs only ~5 shingles. Char shingles are
salted so they never equal word shingles. A pair on both sides of the `short_doc_words` cut
(e.g. 199 vs 201 words; word replacements never change the count) is shingled differently and
not found by MinHash -- the price of one signature per document (exact dedup still finds exact
copies).

Empty documents (null, or no word left after normalisation) get the sentinel signature (all
entries 2^64-1) which `estimated_jaccard` scores 0 against anything and `bucket_entries` leaves out.

Signatures depend only on each document's own text and the config, so they are identical
whatever the batch split or order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.dedup.config import MinHashConfig
from mixforge.dedup.hashing import MASK64, _string_buffers, hash_strings, mix64, normalize_text, splitmix64_stream

SENTINEL = np.uint64(MASK64)
_ROWS_PER_PASS = 1 << 13  # shingles per (num_perm x rows) block: 112 x 8192 x 8 B = 7 MB
_CHAR_SALT = 0x63686172_73686E67  # "charshng"
_WORD_SALT = 0x776F7264_73686E67  # "wordshng"
_NGRAM_K = splitmix64_stream(0x6E6772616D, 64)  # per-position multipliers of n-gram hashes
_BAND_K = splitmix64_stream(0x62616E64, 64)  # per-row multipliers of band hashes


def _odd(x: int) -> int:
    return x | 1


def ngram_hashes(
    tokens: np.ndarray, offsets: np.ndarray, n: int | np.ndarray, salt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the n-grams of consecutive `tokens` (uint64) within each document.

    `offsets` (int64, len = docs + 1) delimit each document's tokens; `n` is one int or one per
    document. A document with 0 < L < n tokens yields one shingle of all L; one with none
    yields none. Returns (shingle hashes uint64, shingle offsets int64 len = docs + 1).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    n_doc = np.broadcast_to(np.asarray(n, dtype=np.int64), lengths.shape)
    n_eff = np.minimum(n_doc, lengths)
    counts = np.where(lengths > 0, lengths - n_eff + 1, 0)
    sh_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(counts, out=sh_offsets[1:])
    total = int(sh_offsets[-1])
    # start token of every shingle: doc start + 0 .. count-1
    doc_of = np.repeat(np.arange(len(lengths)), counts)
    starts = np.arange(total, dtype=np.int64) - sh_offsets[:-1][doc_of] + offsets[:-1][doc_of]
    n_of = n_eff[doc_of]
    nmax = int(n_of.max()) if total else 0
    uniform = total == 0 or int(n_of.min()) == nmax
    acc = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(nmax):
            if uniform:
                acc += tokens[starts + k] * np.uint64(_odd(_NGRAM_K[k]))
            else:
                use = n_of > k
                idx = np.where(use, starts + k, starts)
                term = tokens[idx] * np.uint64(_odd(_NGRAM_K[k]))
                term[~use] = 0
                acc += term
        acc ^= np.uint64(salt)
        acc += n_of.astype(np.uint64)  # a 2-gram never equals a 3-gram of other words by construction
    return mix64(acc), sh_offsets


class MinHasher:
    """MinHash signatures (n_docs x num_perm uint64) and LSH band hashes for one config."""

    def __init__(self, cfg: MinHashConfig = MinHashConfig()):
        self.cfg = cfg
        rnd = splitmix64_stream(cfg.seed, 2 * cfg.num_perm)
        self._a = np.array([_odd(x) for x in rnd[: cfg.num_perm]], dtype=np.uint64)
        self._b = np.array(rnd[cfg.num_perm :], dtype=np.uint64)

    @property
    def num_perm(self) -> int:
        return self.cfg.num_perm

    # -- shingling ---------------------------------------------------------------------
    def _normalise(self, text: pa.Array | pa.ChunkedArray) -> pa.Array:
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
        text = pc.fill_null(text, "") if text.null_count else text
        # whitespace is split on below; collapsing it here would be wasted work
        return normalize_text(
            text, lowercase=self.cfg.lowercase, strip_punctuation=self.cfg.strip_punctuation, collapse_whitespace=False
        )

    @staticmethod
    def _char_shingles(words: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Byte n-grams of each document's words joined by single spaces."""
        offs, data, _ = _string_buffers(pc.binary_join(words, pa.scalar(" ", words.type.value_type)))
        tokens = data.astype(np.uint64) + np.uint64(1)
        return ngram_hashes(tokens, offs, n, _CHAR_SALT)

    def shingles(self, text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Shingle hashes of every document: (hashes uint64, offsets int64 len = docs + 1).

        Documents follow the short-document strategy of the config (module docstring)."""
        cfg = self.cfg
        norm = pc.utf8_trim_whitespace(self._normalise(text))
        words = pc.utf8_split_whitespace(norm)  # ListArray<string>; "" -> [""], no nulls
        w_off = np.asarray(words.offsets, dtype=np.int64)
        flat = words.values.slice(int(w_off[0]), int(w_off[-1] - w_off[0]))
        w_off = w_off - w_off[0]
        n_words = np.diff(w_off)
        n_words[(n_words == 1) & (pc.utf8_length(norm).to_numpy(zero_copy_only=False) == 0)] = 0
        short = (
            (n_words > 0) & (n_words < cfg.short_doc_words)
            if cfg.short_doc_strategy != "none"
            else np.zeros(len(n_words), bool)
        )
        use_char = (
            (n_words > 0)
            if cfg.shingle == "char"
            else (short if cfg.short_doc_strategy == "char" else np.zeros(len(n_words), bool))
        )
        word_docs = (n_words > 0) & ~use_char
        if not use_char.any():
            n = np.where(short, cfg.short_n, cfg.n) if cfg.short_doc_strategy == "smaller_n" else cfg.n
            h = hash_strings(flat)
            if (n_words == 0).any():  # drop the "" word of empty documents
                keep = np.repeat(n_words > 0, np.diff(w_off))
                h = h[keep]
                w_off = np.zeros(len(n_words) + 1, dtype=np.int64)
                np.cumsum(n_words, out=w_off[1:])
            return ngram_hashes(h, w_off, n, _WORD_SALT)

        char_idx = np.flatnonzero(use_char)
        char_n = np.where(short, cfg.short_char_n, cfg.n)[char_idx] if cfg.shingle == "char" else cfg.short_char_n
        c_hash, c_off = self._char_shingles(words.filter(pa.array(use_char)), char_n)
        parts = [(char_idx, c_hash, c_off)]
        if word_docs.any():
            word_idx = np.flatnonzero(word_docs)
            sub = words.filter(pa.array(word_docs))
            so = np.asarray(sub.offsets, dtype=np.int64)
            sflat = sub.values.slice(int(so[0]), int(so[-1] - so[0]))
            parts.append((word_idx, *ngram_hashes(hash_strings(sflat), so - so[0], cfg.n, _WORD_SALT)))
        return _interleave(parts, len(n_words))

    # -- signatures ----------------------------------------------------------------------
    def signatures(self, text: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """MinHash signature of every document: uint64 array (n_docs, num_perm).

        Empty documents get the all-(2^64-1) sentinel row."""
        sh, offs = self.shingles(text)
        return self.signatures_from_shingles(sh, offs)

    def signatures_from_shingles(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures from precomputed shingle hashes (offsets int64, len = docs + 1)."""
        n_docs = len(offsets) - 1
        sig = np.full((n_docs, self.num_perm), SENTINEL, dtype=np.uint64)
        counts = np.diff(offsets)
        nz = np.flatnonzero(counts > 0)
        if len(nz) == 0:
            return sig
        nz_start = offsets[:-1][nz]
        total = int(offsets[-1])
        rows = _ROWS_PER_PASS
        # (num_perm x rows) blocks: the per-permutation multiply/add run over contiguous rows
        # with a scalar operand (SIMD), and reduceat reduces contiguous segments.
        buf = np.empty((self.num_perm, rows), dtype=np.uint64)
        a, b = self._a[:, None], self._b[:, None]
        with np.errstate(over="ignore"):
            for r0 in range(0, total, rows):
                r1 = min(r0 + rows, total)
                k0 = int(np.searchsorted(nz_start, r0, side="right")) - 1
                k1 = int(np.searchsorted(nz_start, r1, side="left"))
                seg = nz_start[k0:k1] - r0
                seg[0] = 0  # the first document may have started in an earlier block
                h = buf[:, : r1 - r0]
                np.multiply(a, shingles[None, r0:r1], out=h)
                h += b
                mins = np.minimum.reduceat(h, seg, axis=1).T
                docs = nz[k0:k1]
                sig[docs] = np.minimum(sig[docs], mins)
        return sig

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """LSH band hashes (n_docs, bands) uint64: band b hashes rows b*rows .. (b+1)*rows-1."""
        r = self.cfg.rows
        k = np.array([_odd(x) for x in _BAND_K[:r]], dtype=np.uint64)
        with np.errstate(over="ignore"):
            v = sig.reshape(sig.shape[0], self.cfg.bands, r) * k
            acc = v.sum(axis=2, dtype=np.uint64)
        return mix64(acc)

    def bucket_entries(self, sig: np.ndarray, doc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat (band uint8|uint16, band_hash uint64, doc uint64) rows for the LSH shuffle,
        one per (document, band), leaving out empty (sentinel) documents. Partition by
        band_hash % partitions; feed each partition to `clusters.candidate_edges`."""
        doc = np.asarray(doc, dtype=np.uint64)
        keep = ~is_empty(sig)
        bh = self.band_hashes(sig[keep])
        nb = self.cfg.bands
        band = np.tile(np.arange(nb, dtype=np.uint8 if nb < 256 else np.uint16), bh.shape[0])
        return band, bh.reshape(-1), np.repeat(doc[keep], nb)


def _interleave(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-subset (doc indices, shingles, offsets) back into document order."""
    counts = np.zeros(n_docs, dtype=np.int64)
    for idx, _, off in parts:
        counts[idx] = np.diff(off)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint64)
    for idx, sh, off in parts:
        c = np.diff(off)
        dst_doc = np.repeat(offsets[:-1][idx], c)
        within = np.arange(len(sh), dtype=np.int64) - np.repeat(off[:-1], c)
        out[dst_doc + within] = sh
    return out, offsets


def is_empty(sig: np.ndarray) -> np.ndarray:
    """Rows of `sig` that are the empty-document sentinel."""
    return sig[:, 0] == SENTINEL if sig.ndim == 2 else sig[0] == SENTINEL


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature entries (float64); 0 where either row is empty."""
    sig_a, sig_b = np.atleast_2d(sig_a), np.atleast_2d(sig_b)
    j = (sig_a == sig_b).mean(axis=1)
    j[is_empty(sig_a) | is_empty(sig_b)] = 0.0
    return j
