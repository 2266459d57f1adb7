"""Gopher repetition heuristics, vectorised (semantics of datatrove's `GopherRepetitionFilter`).

Sub-rules, in check order (drop_reason `gopher_repetition.<sub_rule>`): `empty`, `dup_para_frac`,
`dup_para_char_frac`, `dup_line_frac`, `dup_line_char_frac`, `top_<n>_gram` (n = 2, 3, 4),
`dup_<n>_gram` (n = 5..10). Features: the same names with the measured fraction
(`gopher_repetition.dup_para_frac`, ..., `gopher_repetition.top_2_gram`, ..., `gopher_repetition.dup_5_gram`).

Word n-grams are hashed: every word gets a 64-bit hash (Polars), an n-gram's hash is a polynomial
(rolling) combination of its words' hashes computed for all positions at once with numpy, mixed
with the document index. An n-gram can only repeat in a document if both its (n-1)-grams do, so at
each n only the positions whose two (n-1)-grams are repeated are counted (hash-based Polars
`is_duplicated` / `is_first_distinct` / counts over one flat array per n): in natural text that
is a small fraction of the words from n = 3 on. The duplicated-n-gram rule is datatrove's greedy scan
(a repeated n-gram is counted and skipped over), which is sequential: we compute a vectorised upper
bound (characters of words covered by any repeated n-gram) and run the exact scan only for
documents whose bound exceeds the threshold, over their repeated n-grams only (the others can never
count), stopping as soon as the threshold is exceeded. Verdicts are exact; the `dup_<n>_gram` feature is exact when set
`exact_dup_n_gram_features`; otherwise, at or below the threshold it is an upper bound of the
exact value, and above the threshold a lower bound (still above the threshold).

Languages: any script (words as in `mixforge.filters.text`: spaCy English tokens, as datatrove).
In documents of an unspaced-script language (`lang` zh, ja, th, ...) each Han/Kana/Thai/Lao/Khmer/
Myanmar character is a word, so the n-gram rules see character n-grams there (thresholds are
the English ones: a coarse check); without a `lang`, a CJK/Thai run between spaces is one word.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.compute as pc

from mixforge.filters.base import Evaluation, RuleSet, safe_div, zero_is_off
from mixforge.filters.config import GopherRepetitionConfig
from mixforge.filters.text import Segments, TextBatch, _segments_from_lists, load_tokenizer

_MIX = np.uint64(0x9E3779B97F4A7C15)
_DOC_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _segments_regex_split(text_arrow, pattern: str, n_docs: int) -> Segments:
    return _segments_from_lists(pl.Series(pc.split_pattern_regex(text_arrow, pattern)), n_docs)


def greedy_duplicate_chars(
    pos: np.ndarray, keys: np.ndarray, lens: np.ndarray, n: int, stop_above: float = float("inf")
) -> int:
    """datatrove's `find_all_duplicate` for one document, given only its *repeated* n-grams
    (positions in increasing order, a key per distinct n-gram, their character lengths).

    The scan visits every start position except the n - 1 after a hit; a visited n-gram seen before
    is a hit. An n-gram that occurs once in the document can never be a hit and adding it to the
    seen set changes nothing, so iterating over the repeated positions alone (skipping those
    inside the window of the last hit) gives the same total. Stops early, returning the partial
    count, once it exceeds `stop_above`."""
    seen: set = set()
    total, next_idx = 0, -1
    for p, k, length in zip(pos.tolist(), keys.tolist(), lens.tolist()):
        if p < next_idx:
            continue
        if k in seen:
            total += length
            if total > stop_above:
                return total
            next_idx = p + n
        else:
            seen.add(k)
    return total


def _group(keys: np.ndarray, counts: bool = False, first: bool = False):
    """For keys listed in position order (hash-based, Polars): whether each key occurs more than
    once; optionally how many times, and whether it is the first occurrence of its key."""
    k = pl.Series("k", keys)
    if counts:
        cnt = pl.DataFrame([k]).select(pl.len().over("k"))[:, 0].to_numpy()
        repeated = cnt > 1
    else:
        cnt, repeated = None, k.is_duplicated().to_numpy()
    return repeated, cnt, (k.is_first_distinct().to_numpy() if first else None)


class GopherRepetition(RuleSet):
    name = "gopher_repetition"
    config_class = GopherRepetitionConfig

    def setup(self) -> None:
        load_tokenizer()

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c, name = self.config, self.name
        ev = Evaluation(batch.n_docs)
        text_len = batch.char_len.astype(np.float64)
        ev.add_rule(f"{name}.empty", text_len == 0)

        stripped = pl.Series(batch.text.str.strip_chars()).to_arrow()
        paragraphs = _segments_regex_split(stripped, r"\n{2,}", batch.n_docs)
        dup_n, dup_chars = paragraphs.duplicates()
        self._check(ev, "dup_para_frac", safe_div(dup_n, paragraphs.counts), c.dup_para_frac)
        self._check(ev, "dup_para_char_frac", safe_div(dup_chars, text_len), c.dup_para_char_frac)

        lines = _segments_regex_split(batch.text_arrow, r"\n+", batch.n_docs)
        dup_n, dup_chars = lines.duplicates()
        self._check(ev, "dup_line_frac", safe_div(dup_n, lines.counts), c.dup_line_frac)
        self._check(ev, "dup_line_char_frac", safe_div(dup_chars, text_len), c.dup_line_char_frac)

        top, dup = self._n_gram_stats(batch, text_len)
        for n_, thr in sorted(c.top_n_grams.items()):
            self._check(ev, f"top_{n_}_gram", top[n_], thr)
        for n_, thr in sorted(c.dup_n_grams.items()):
            self._check(ev, f"dup_{n_}_gram", dup[n_], thr)
        return ev

    def _check(self, ev: Evaluation, sub: str, value: np.ndarray, threshold: float | None) -> None:
        ev.add_feature(f"{self.name}.{sub}", value)
        ev.threshold(f"{self.name}.{sub}", value, above=zero_is_off(threshold))  # 0 is off, as in datatrove

    def _n_gram_stats(self, batch: TextBatch, text_len: np.ndarray):
        """top_<n>_gram and dup_<n>_gram values for all documents, over hashed word ids.

        An n-gram can only occur twice in a document if both its (n-1)-grams do, so the n-grams
        counted at each n are only those at positions whose two (n-1)-grams are repeated: after
        n = 2 or 3 that is a small fraction of the words in natural text. Counting is a stable
        argsort of 64-bit keys (n-gram hash mixed with the document index)."""
        c = self.config
        n_docs = batch.n_docs
        top: dict[int, np.ndarray] = {}
        dup: dict[int, np.ndarray] = {}
        wanted = set(c.top_n_grams) | set(c.dup_n_grams)
        if not wanted:
            return top, dup
        h, wl, d = batch.word_hash, batch.word_len, batch.words.doc
        n_total = len(h)
        word_start = batch.words.offsets[:-1]
        cum_len = np.concatenate([[0], np.cumsum(wl)])
        dmix = d.astype(np.uint64) * _DOC_MIX
        # The (n-1)-grams that occur more than once in their document: positions (increasing), hashes,
        # characters. Only they are extended to n-grams (sparse: no pass over every position).
        rpos = np.flatnonzero(_group(h ^ dmix)[0])
        rg, rlen = h[rpos], wl[rpos]
        for n in range(2, max(wanted) + 1):
            m = n_total - n + 1
            if m <= 0:
                for n_ in range(n, max(wanted) + 1):
                    if n_ in c.top_n_grams:
                        top[n_] = np.zeros(n_docs)
                    if n_ in c.dup_n_grams:
                        dup[n_] = np.zeros(n_docs)
                break
            is_rep = np.zeros(n_total + 1, dtype=bool)
            is_rep[rpos] = True
            k = np.flatnonzero(is_rep[rpos + 1] & (rpos < m))  # both (n-1)-grams of the n-gram repeated
            k = k[d[rpos[k]] == d[rpos[k] + n - 1]]  # within one document
            pos = rpos[k]
            with np.errstate(over="ignore"):
                g = rg[k] * _MIX + h[pos + n - 1]
            glen = rlen[k] + wl[pos + n - 1]
            key = g ^ dmix[pos]
            repeated, cnt, first = _group(key, counts=n in c.top_n_grams, first=True)
            if n in c.top_n_grams:
                # no repeated n-gram: the document's first n-gram (Counter.most_common(1))
                long_enough = batch.words.counts >= n
                first_len = np.zeros(n_docs)
                s0 = word_start[long_enough]
                first_len[long_enough] = cum_len[s0 + n] - cum_len[s0] + (n - 1)
                top[n] = safe_div(self._top_chars(n, d, first_len, glen, pos, cnt, first), text_len)
            if n in c.dup_n_grams:
                dup[n] = self._dup_fraction(
                    n, wl, d, pos[repeated], key[repeated], ~first[repeated], glen[repeated], text_len,
                    c.dup_n_grams[n],
                )  # fmt: skip
            rpos, rg, rlen = pos[repeated], g[repeated], glen[repeated]
        return top, dup

    @staticmethod
    def _top_chars(n, d, first_len, glen, pos, cnt, first) -> np.ndarray:
        """Characters of the most frequent n-gram (" ".join) times its count; ties: first seen;
        no repeated n-gram: `first_len`, the document's first n-gram (Counter.most_common(1))."""
        out = first_len.copy()
        sel = first & (cnt > 1)  # one entry per repeated n-gram, at its first position
        if sel.any():
            p, c_, gl = pos[sel], cnt[sel], glen[sel]
            pd = d[p]
            order = np.lexsort((p, -c_, pd))  # per document: highest count, then earliest
            c_, gl, pd = c_[order], gl[order], pd[order]
            best = np.r_[True, pd[1:] != pd[:-1]]
            out[pd[best]] = c_[best] * (gl[best] + (n - 1))
        return out

    def _dup_fraction(self, n, wl, d, rpos, rgid, is_repeat, rlen, text_len, threshold) -> np.ndarray:
        """`rpos`: positions (increasing) of n-grams occurring more than once in their document,
        `rgid`: their n-gram keys, `is_repeat`: not the first occurrence, `rlen`: their characters."""
        n_docs = len(text_len)
        if not is_repeat.any():
            return np.zeros(n_docs)
        # Upper bound: characters of words covered by some non-first occurrence window.
        starts = rpos[is_repeat]
        cover = np.bincount(starts, minlength=len(wl) + n) - np.bincount(starts + n, minlength=len(wl) + n)
        covered = np.cumsum(cover[: len(wl)]) > 0
        bound = safe_div(np.bincount(d, weights=np.where(covered, wl, 0), minlength=n_docs), text_len)
        exact = self.config.exact_dup_n_gram_features
        exact_docs = np.flatnonzero(bound > 0) if exact else np.flatnonzero(bound > threshold)
        if len(exact_docs) == 0:
            return bound
        result = bound.copy()
        rd = d[rpos]
        lo = np.searchsorted(rd, exact_docs, side="left")
        hi = np.searchsorted(rd, exact_docs, side="right")
        for doc, s, e in zip(exact_docs.tolist(), lo.tolist(), hi.tolist()):
            stop = float("inf") if exact else threshold * text_len[doc]
            result[doc] = greedy_duplicate_chars(rpos[s:e], rgid[s:e], rlen[s:e], n, stop) / text_len[doc]
        return result
