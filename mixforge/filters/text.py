"""Vectorised text segmentation shared by all rule sets.

A `TextBatch` wraps one column of documents and computes, lazily and once, the segmentations the
rules need (words, lines, paragraphs) as *flat* Polars series plus a numpy array of document
indices. Per-document statistics are then `numpy.bincount` over those indices: no Python loop
per document.

Word splitting (`TOKEN_PATTERN`) approximates spaCy's rule-based tokenizer, which datatrove uses
for `split_into_words`: whitespace-separated pieces, with punctuation split off as one-character
tokens, an ellipsis as one token, URLs kept whole, apostrophe suffixes ("'s", "'t") split off and
dotted forms ("3.5", "e.g") kept whole. It is script-aware rather than language-aware:

* Latin, Cyrillic, Greek, Armenian, Georgian, Arabic, Hebrew, Devanagari ... (scripts that separate
  words with spaces): a word is a run of letters, marks, digits and underscores.
* Han, Hiragana, Katakana, Hangul-free CJK, Thai, Lao, Khmer, Myanmar, Tibetan (scripts written
  without spaces): every character is one word (character-based fallback). Hangul is spaced and
  is treated as the first group.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\p{Tibetan}\x{3005}\x{30FC}"
# Letters, marks, digits, plus what spaCy never splits off a word: "@", modifier symbols and
# control/format/private-use characters (e.g. the C1 bytes of mojibake), but never whitespace.
_WORD_CHAR = rf"[[\p{{L}}\p{{M}}\p{{N}}_@\p{{Cc}}\p{{Cf}}\p{{Co}}\p{{Cn}}\p{{Sk}}]--[{_UNSPACED}\s^`]]"

TOKEN_PATTERN = (
    r"(?:https?|ftp)://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]"  # URL kept whole, trailing punctuation split off
    r"|\.\.+|…"  # ellipsis
    rf"|[{_UNSPACED}]"  # one character per word where words are not space-separated
    rf"|{_WORD_CHAR}+(?:\.{_WORD_CHAR}+)*"  # word, or dotted form: 3.5, e.g, www.example.com
    r"|['’]\p{L}+"  # apostrophe suffix: 's, 're, 't
    r"|\S"  # any other non-space character is a one-character token
)

# Python's str.splitlines() boundaries.
SPLITLINES_PATTERN = r"\r\n|[\n\r\x{0B}\x{0C}\x{1C}\x{1D}\x{1E}\x{85}\x{2028}\x{2029}]"


@dataclass(frozen=True)
class Segments:
    """Flat segments of a batch of documents: `values[i]` belongs to document `doc[i]`."""

    values: pl.Series
    doc: np.ndarray  # int64, non-decreasing
    counts: np.ndarray  # int64, segments per document
    n_docs: int

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)])

    def per_doc_sum(self, weights) -> np.ndarray:
        w = np.asarray(weights, dtype=np.float64)
        return np.bincount(self.doc, weights=w, minlength=self.n_docs)

    def per_doc_count(self, mask) -> np.ndarray:
        m = np.asarray(mask, dtype=bool)
        return np.bincount(self.doc[m], minlength=self.n_docs).astype(np.int64)

    def filter(self, mask) -> Segments:
        m = np.asarray(mask, dtype=bool)
        doc = self.doc[m]
        return Segments(self.values.filter(pl.Series(m)), doc, np.bincount(doc, minlength=self.n_docs).astype(np.int64), self.n_docs)

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """datatrove's `find_duplicates` per document: (number of segments equal to an earlier
        segment of the same document, characters in them)."""
        if len(self.values) == 0:
            z = np.zeros(self.n_docs)
            return z, z
        frame = pl.DataFrame({"d": self.doc, "v": self.values})
        repeat = ~frame.select(pl.struct("d", "v").is_first_distinct()).to_series().to_numpy()
        chars = self.values.str.len_chars().to_numpy()
        return self.per_doc_count(repeat).astype(np.float64), self.per_doc_sum(np.where(repeat, chars, 0))


def _segments_from_lists(lists: pl.Series, n_docs: int) -> Segments:
    counts = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = lists.explode(empty_as_null=False, keep_nulls=False)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), counts)
    return Segments(values, doc, counts, n_docs)


def as_string_array(values) -> pa.Array:
    """Any Arrow string-like array/chunked array/list -> one pa.large_string array, nulls as ""."""
    if isinstance(values, pl.Series):
        values = values.to_arrow()
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values, pa.large_string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.large_string())
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    return pc.fill_null(values, "")


class TextBatch:
    """Documents of one batch with their lazily computed segmentations.

    `lang` (ISO 639-1 codes, or null) and `url` are optional per-document columns.
    """

    def __init__(self, text, lang=None, url=None) -> None:
        self.text_arrow = as_string_array(text)
        self.text = pl.Series("text", self.text_arrow)
        self.n_docs = len(self.text)
        self.lang = None if lang is None else pl.Series("lang", as_string_array(lang))
        self.url = None
        if url is not None:
            url = url.to_arrow() if isinstance(url, pl.Series) else url
            url = url.combine_chunks() if isinstance(url, pa.ChunkedArray) else url
            self.url = pl.Series("url", pa.array(url, pa.large_string()) if not isinstance(url, pa.Array) else url.cast(pa.large_string()))

    @cached_property
    def char_len(self) -> np.ndarray:
        return self.text.str.len_chars().to_numpy().astype(np.int64)

    def count_literal(self, needle: str) -> np.ndarray:
        """Non-overlapping occurrences of `needle` per document (like str.count)."""
        return self.text.str.count_matches(needle, literal=True).to_numpy().astype(np.int64)

    @cached_property
    def words(self) -> Segments:
        return _segments_from_lists(self.text.str.extract_all(TOKEN_PATTERN), self.n_docs)

    @cached_property
    def word_len(self) -> np.ndarray:
        return self.words.values.str.len_chars().to_numpy().astype(np.int64)

    @cached_property
    def word_hash(self) -> np.ndarray:
        return self.words.values.hash(seed=0x5EED).to_numpy()

    @cached_property
    def lines(self) -> Segments:
        """Python `str.splitlines()` per document (no trailing empty line, [] for "")."""
        parts = self.text.str.replace_all(SPLITLINES_PATTERN, "\n").str.split("\n")
        seg = _segments_from_lists(parts, self.n_docs)
        # split() yields a trailing "" when the text ends with a line break (or is empty):
        # splitlines() does not.
        last = seg.offsets[1:] - 1
        has = seg.counts > 0
        last = last[has]
        drop = np.zeros(len(seg.values), dtype=bool)
        if len(last):
            drop[last] = seg.values.gather(last).str.len_bytes().to_numpy() == 0
        return seg.filter(~drop) if drop.any() else seg

    @cached_property
    def newline_lines(self) -> Segments:
        """`text.split("\\n")` per document."""
        return _segments_from_lists(self.text.str.split("\n"), self.n_docs)

    @cached_property
    def newline_count(self) -> np.ndarray:
        return self.count_literal("\n")
