"""Gopher repetition heuristics, vectorised (semantics of datatrove's `GopherRepetitionFilter`).

Sub-rules, in check order (drop_reason `gopher_repetition.<sub_rule>`): `empty`, `dup_para_frac`,
`dup_para_char_frac`, `dup_line_frac`, `dup_line_char_frac`, `top_<n>_gram` (n = 2, 3, 4),
`dup_<n>_gram` (n = 5..10). Features: the same names with the measured fraction
(`gopher_repetition.dup_para_frac`, ..., `gopher_repetition.top_2_gram`, ..., `gopher_repetition.dup_5_gram`).

Word n-grams are hashed: every word gets a 64-bit hash (Polars), an n-gram's hash is a polynomial
combination of its words' hashes computed for all positions at once with numpy, and per-document
counts come from Polars group-bys keyed by (document, n-gram hash). The duplicated-n-gram rule is
datatrove's greedy scan (a repeated n-gram is counted and skipped over), which is sequential: we
compute a vectorised upper bound (characters of words covered by any repeated n-gram) and run the
exact scan, on integer hashes, only for documents whose bound exceeds the threshold, stopping as soon
as the threshold is exceeded. Verdicts are exact; the `dup_<n>_gram` feature is exact when set
`exact_dup_n_gram_features`; otherwise, at or below the threshold it is an upper bound of the
exact value, and above the threshold a lower bound (still above the threshold).

Languages: any script (words as in `mixforge.filters.text`; CJK/Thai: characters).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.compute as pc

from mixforge.filters.base import Evaluation, RuleSet, safe_div
from mixforge.filters.config import GopherRepetitionConfig
from mixforge.filters.text import Segments, TextBatch, _segments_from_lists

_MIX = np.uint64(0x9E3779B97F4A7C15)
_DOC_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _segments_regex_split(text_arrow, pattern: str, n_docs: int) -> Segments:
    return _segments_from_lists(pl.Series(pc.split_pattern_regex(text_arrow, pattern)), n_docs)


def greedy_duplicate_chars(keys: np.ndarray, lens: np.ndarray, n: int, stop_above: float = float("inf")) -> int:
    """datatrove's `find_all_duplicate` over one document's n-gram keys (one per start position).

    Stops early, returning the partial count, once it exceeds `stop_above`."""
    keys = keys.tolist()
    lens = lens.tolist()
    seen: set = set()
    total, idx, m = 0, 0, len(keys)
    while idx < m:
        k = keys[idx]
        if k in seen:
            total += lens[idx]
            if total > stop_above:
                return total
            idx += n
        else:
            seen.add(k)
            idx += 1
    return total


class GopherRepetition(RuleSet):
    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig | None = None) -> None:
        self.config = config or GopherRepetitionConfig()

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
        ev.add_rule(f"{self.name}.{sub}", value > threshold if threshold else np.zeros(ev.n_docs, dtype=bool))

    def _n_gram_stats(self, batch: TextBatch, text_len: np.ndarray):
        c = self.config
        words = batch.words
        h, wl, d = batch.word_hash, batch.word_len, words.doc
        n_total = len(h)
        top: dict[int, np.ndarray] = {}
        dup: dict[int, np.ndarray] = {}
        wanted = set(c.top_n_grams) | set(c.dup_n_grams)
        if not wanted:
            return top, dup
        g, glen = h.copy(), wl.copy()
        for n in range(2, max(wanted) + 1):
            m = n_total - n + 1
            if m <= 0:
                g, glen = g[:0], glen[:0]
            else:
                g = g[:m] * _MIX + h[n - 1 :]
                glen = glen[:m] + wl[n - 1 :]
            if n not in wanted:
                continue
            valid = d[:m] == d[n - 1 : n - 1 + m] if m > 0 else np.zeros(0, dtype=bool)
            pos = np.flatnonzero(valid)
            dv = d[:m][valid] if m > 0 else d[:0]
            key = g[valid] ^ (dv.astype(np.uint64) * _DOC_MIX)  # one 64-bit key per (document, n-gram)
            frame = pl.DataFrame({"d": dv, "g": key, "p": pos, "l": glen[valid]})
            if n in c.top_n_grams:
                top[n] = safe_div(self._top_chars(frame, n, batch.n_docs), text_len)
            if n in c.dup_n_grams:
                dup[n] = self._dup_fraction(frame, n, wl, d, m, valid, text_len, c.dup_n_grams[n])
        return top, dup

    @staticmethod
    def _top_chars(frame: pl.DataFrame, n: int, n_docs: int) -> np.ndarray:
        """Characters of the most frequent n-gram (" ".join) times its count; ties: first seen."""
        out = np.zeros(n_docs)
        if frame.height == 0:
            return out
        groups = frame.group_by("g").agg(pl.len().alias("c"), pl.col("d").first(), pl.col("p").min(), pl.col("l").first())
        gd, gc = groups["d"].to_numpy(), groups["c"].to_numpy()
        max_c = np.zeros(n_docs, dtype=np.int64)
        np.maximum.at(max_c, gd, gc)
        # No repeated n-gram: Counter.most_common(1) returns the first n-gram of the document.
        fd, fl = frame["d"].to_numpy(), frame["l"].to_numpy()
        first = np.searchsorted(fd, np.arange(n_docs), side="left")
        has = (first < len(fd)) & (fd[np.minimum(first, len(fd) - 1)] == np.arange(n_docs))
        out[has] = fl[first[has]] + (n - 1)
        # Otherwise: among the most frequent, the one seen first.
        top = (gc == max_c[gd]) & (gc > 1)
        if top.any():
            best = groups.filter(pl.Series(top)).sort("p").unique(subset="d", keep="first")
            out[best["d"].to_numpy()] = best["c"].to_numpy() * (best["l"].to_numpy() + (n - 1))
        return out

    def _dup_fraction(self, frame, n, wl, d, m, valid, text_len, threshold) -> np.ndarray:
        n_docs = len(text_len)
        if frame.height == 0:
            return np.zeros(n_docs)
        repeat_valid = ~frame["g"].is_first_distinct().to_numpy()
        if not repeat_valid.any():
            return np.zeros(n_docs)
        repeat = np.zeros(m, dtype=bool)
        repeat[valid] = repeat_valid
        # Upper bound: characters of words covered by some repeated n-gram window.
        cs = np.concatenate([[0], np.cumsum(repeat)])
        j = np.arange(len(wl))
        hi = np.minimum(j, m - 1) + 1
        lo = np.maximum(0, j - n + 1)
        covered = (cs[np.clip(hi, 0, m)] - cs[np.clip(lo, 0, m)]) > 0
        bound = safe_div(np.bincount(d, weights=np.where(covered, wl, 0), minlength=n_docs), text_len)
        exact_docs = np.flatnonzero(bound > 0) if self.config.exact_dup_n_gram_features else np.flatnonzero(bound > threshold)
        if len(exact_docs) == 0:
            return bound
        # Exact greedy scan for those documents, over their valid n-gram positions (contiguous).
        result = bound.copy()
        fd = frame["d"].to_numpy()
        fg = frame["g"].to_numpy()
        fl = frame["l"].to_numpy()
        starts = np.searchsorted(fd, exact_docs, side="left")
        ends = np.searchsorted(fd, exact_docs, side="right")
        exact = self.config.exact_dup_n_gram_features
        for doc, s, e in zip(exact_docs.tolist(), starts.tolist(), ends.tolist()):
            stop = float("inf") if exact else threshold * text_len[doc]
            result[doc] = greedy_duplicate_chars(fg[s:e], fl[s:e], n, stop) / text_len[doc]
        return result
