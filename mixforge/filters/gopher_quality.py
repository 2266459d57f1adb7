"""Gopher quality heuristics, vectorised (semantics of datatrove's `GopherQualityFilter`).

Sub-rules, in check order (drop_reason `gopher_quality.<sub_rule>`): `word_count`,
`mean_word_length`, `symbol_word_ratio`, `bullet_lines`, `ellipsis_lines`, `alpha_words`,
`stop_words`. Features: `gopher_quality.n_words`, `.mean_word_length`, `.hash_ratio`,
`.ellipsis_ratio`, `.bullet_lines_ratio`, `.ellipsis_lines_ratio`, `.alpha_words_ratio`, `.n_stop_words`.

Languages: all rules work on any script (see `mixforge.filters.text`); stop words are checked with the
document's language list (`lang` column, else `TextBatch.default_language`: the filter's
`default_language`) and pass for languages without a list (defaults: en, de, fr, es, it, pt, nl).
Words are spaCy English tokens as in datatrove; in documents of an unspaced-script language
(`lang` zh, ja, th, ko, ... : `TextBatch.unspaced_languages`) each Han/Kana/Thai/Lao/Khmer/Myanmar
character is a word (`mixforge.filters.text`). `word_count`,
`symbol_word_ratio`, `alpha_words` and `stop_words` (no list for these languages: pass) then work
for them; the `mean_word_length` bounds (3..10) are English-specific and are not applied to these
documents (per-character words have a mean length of about 1). Without a `lang`, a whole CJK/Thai
run between spaces is one word, as in datatrove, and such documents fail `word_count` or
`mean_word_length` (max 10).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mixforge.filters._punctuation import PUNCTUATION_SET
from mixforge.filters.base import Evaluation, RuleSet, safe_div, zero_is_off
from mixforge.filters.config import GopherQualityConfig
from mixforge.filters.text import TextBatch, load_tokenizer


def _char_class(chars) -> str:
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(chars)) + "]"


NOT_PUNCTUATION = "[^" + _char_class(PUNCTUATION_SET)[1:]  # any character outside PUNCTUATION_SET
ALPHA = r"\p{L}"


class GopherQuality(RuleSet):
    name = "gopher_quality"
    config_class = GopherQualityConfig

    def setup(self) -> None:
        load_tokenizer()

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c, n = self.config, self.name
        ev = Evaluation(batch.n_docs)
        words = batch.words
        n_words = words.counts.astype(np.float64)
        wl = batch.word_len
        non_symbol = words.values.str.contains(NOT_PUNCTUATION).to_numpy()
        n_ns = words.per_doc_count(non_symbol).astype(np.float64)
        ns_len = words.per_doc_sum(np.where(non_symbol, wl, 0))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_len = ns_len / n_ns  # nan without words, as np.mean([]) in datatrove: compares False

        # Limits through zero_is_off: 0 turns a rule off, as in datatrove.
        ev.threshold(f"{n}.word_count", n_ns, below=zero_is_off(c.min_doc_words), above=zero_is_off(c.max_doc_words))
        # Per-character words (unspaced scripts): the English 3..10 bounds do not apply.
        ev.threshold(
            f"{n}.mean_word_length",
            mean_len,
            below=zero_is_off(c.min_avg_word_length),
            above=zero_is_off(c.max_avg_word_length),
            where=None if batch.unspaced is None else ~np.asarray(batch.unspaced, dtype=bool),
        )

        hash_ratio = safe_div(batch.count_literal("#"), n_words)
        ellipsis_ratio = safe_div(batch.count_literal("...") + batch.count_literal("…"), n_words)
        ev.threshold(
            f"{n}.symbol_word_ratio",
            np.maximum(hash_ratio, ellipsis_ratio),
            above=zero_is_off(c.max_symbol_word_ratio),
        )

        lines = batch.lines
        n_lines = lines.counts.astype(np.float64)
        bullet = lines.values.str.strip_chars_start().str.contains(r"^[•-]").to_numpy()
        ell = lines.values.str.strip_chars_end().str.contains(r"(?:\.\.\.|…)$").to_numpy()
        bullet_ratio = safe_div(lines.per_doc_count(bullet), n_lines)
        ellipsis_lines_ratio = safe_div(lines.per_doc_count(ell), n_lines)
        ev.threshold(f"{n}.bullet_lines", bullet_ratio, above=zero_is_off(c.max_bullet_lines_ratio))
        ev.threshold(f"{n}.ellipsis_lines", ellipsis_lines_ratio, above=zero_is_off(c.max_ellipsis_lines_ratio))

        alpha = words.values.str.contains(ALPHA).to_numpy()
        alpha_ratio = safe_div(words.per_doc_count(alpha), n_words)
        ev.threshold(f"{n}.alpha_words", alpha_ratio, below=zero_is_off(c.min_alpha_words_ratio))

        n_stop, has_list = self._stop_words(batch)
        ev.threshold(f"{n}.stop_words", n_stop, below=zero_is_off(c.min_stop_words), where=has_list)

        for key, val in (
            ("n_words", n_ns),
            ("mean_word_length", mean_len),
            ("hash_ratio", hash_ratio),
            ("ellipsis_ratio", ellipsis_ratio),
            ("bullet_lines_ratio", bullet_ratio),
            ("ellipsis_lines_ratio", ellipsis_lines_ratio),
            ("alpha_words_ratio", alpha_ratio),
            ("n_stop_words", n_stop),
        ):
            ev.add_feature(f"{n}.{key}", val)
        return ev

    def _stop_words(self, batch: TextBatch) -> tuple[np.ndarray, np.ndarray]:
        """Distinct stop words of each document's language present in it; whether it has a list."""
        words = batch.words
        lists = self.config.stop_words
        if batch.lang is None:
            doc_lang = pl.Series([batch.default_language] * batch.n_docs)
        else:
            doc_lang = batch.lang.replace("", batch.default_language)
        has_list = doc_lang.is_in(list(lists)).to_numpy()
        is_stop = np.zeros(len(words.values), dtype=bool)
        word_lang = doc_lang.gather(words.doc) if len(words.values) else pl.Series([], dtype=pl.String)
        for lang, stop in lists.items():
            in_lang = (word_lang == lang).to_numpy()
            if in_lang.any():
                is_stop |= in_lang & words.values.is_in(list(stop)).to_numpy()
        if not is_stop.any():
            return np.zeros(batch.n_docs), has_list
        frame = pl.DataFrame({"d": words.doc[is_stop], "w": words.values.filter(pl.Series(is_stop))})
        distinct = frame.unique()["d"].to_numpy()
        return np.bincount(distinct, minlength=batch.n_docs).astype(np.float64), has_list
