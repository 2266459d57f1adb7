"""GopherRepetition before issue #20 (frozen copy, commit 63e0530; not registered as a rule set): the reference
that the sparse n-gram extension is compared with in test_shared_words.py. Not used by the library."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.compute as pc

from mixforge.filters.base import Evaluation, RuleSet, safe_div, zero_is_off
from mixforge.filters.config import GopherRepetitionConfig
from mixforge.filters.text import Segments, TextBatch, _segments_from_lists

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
    # config_class is set after the class: defining it in the body would register a second "gopher_repetition"

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
        dmix = d.astype(np.uint64) * _DOC_MIX
        g, glen = h.copy(), wl.copy()
        rep = _group(g ^ dmix)[0]  # per start position: the (n-1)-gram there occurs more than once in its document
        for n in range(2, max(wanted) + 1):
            m = n_total - n + 1
            if m <= 0:
                for n_ in range(n, max(wanted) + 1):
                    if n_ in c.top_n_grams:
                        top[n_] = np.zeros(n_docs)
                    if n_ in c.dup_n_grams:
                        dup[n_] = np.zeros(n_docs)
                break
            with np.errstate(over="ignore"):
                g = g[:m] * _MIX + h[n - 1 :]
            glen = glen[:m] + wl[n - 1 :]
            valid = d[:m] == d[n - 1 :]
            pos = np.flatnonzero(valid & rep[:m] & rep[1 : m + 1])
            key = g[pos] ^ dmix[pos]
            repeated, cnt, first = _group(key, counts=n in c.top_n_grams, first=True)
            rep = np.zeros(m, dtype=bool)
            rep[pos[repeated]] = True
            if n in c.top_n_grams:
                top[n] = safe_div(self._top_chars(n, d, valid, glen, pos, cnt, first, n_docs), text_len)
            if n in c.dup_n_grams:
                keep = repeated
                dup[n] = self._dup_fraction(
                    n, wl, d, m, pos[keep], key[keep], ~first[keep], glen, text_len, c.dup_n_grams[n]
                )
        return top, dup

    @staticmethod
    def _top_chars(n, d, valid, glen, pos, cnt, first, n_docs) -> np.ndarray:
        """Characters of the most frequent n-gram (" ".join) times its count; ties: first seen;
        no repeated n-gram: the document's first n-gram (Counter.most_common(1))."""
        out = np.zeros(n_docs)
        vpos = np.flatnonzero(valid)
        if len(vpos):
            vd = d[vpos]
            is_first = np.r_[True, vd[1:] != vd[:-1]]
            out[vd[is_first]] = glen[vpos[is_first]] + (n - 1)
        sel = first & (cnt > 1)  # one entry per repeated n-gram, at its first position
        if sel.any():
            p, c_ = pos[sel], cnt[sel]
            pd = d[p]
            order = np.lexsort((p, -c_, pd))  # per document: highest count, then earliest
            p, c_, pd = p[order], c_[order], pd[order]
            best = np.r_[True, pd[1:] != pd[:-1]]
            out[pd[best]] = c_[best] * (glen[p[best]] + (n - 1))
        return out

    def _dup_fraction(self, n, wl, d, m, rpos, rgid, is_repeat, glen, text_len, threshold) -> np.ndarray:
        """`rpos`: positions (increasing) of n-grams occurring more than once in their document,
        `rgid`: their n-gram keys, `is_repeat`: not the first occurrence."""
        n_docs = len(text_len)
        if not is_repeat.any():
            return np.zeros(n_docs)
        # Upper bound: characters of words covered by some non-first occurrence window.
        starts = rpos[is_repeat]
        cover = np.zeros(len(wl) + 1, dtype=np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, starts + n, -1)
        covered = np.cumsum(cover[:-1]) > 0
        bound = safe_div(np.bincount(d, weights=np.where(covered, wl, 0), minlength=n_docs), text_len)
        exact = self.config.exact_dup_n_gram_features
        exact_docs = np.flatnonzero(bound > 0) if exact else np.flatnonzero(bound > threshold)
        if len(exact_docs) == 0:
            return bound
        result = bound.copy()
        rd = d[rpos]
        lo = np.searchsorted(rd, exact_docs, side="left")
        hi = np.searchsorted(rd, exact_docs, side="right")
        rlen = glen[rpos]
        for doc, s, e in zip(exact_docs.tolist(), lo.tolist(), hi.tolist()):
            stop = float("inf") if exact else threshold * text_len[doc]
            result[doc] = greedy_duplicate_chars(rpos[s:e], rgid[s:e], rlen[s:e], n, stop) / text_len[doc]
        return result


GopherRepetition.config_class = GopherRepetitionConfig
