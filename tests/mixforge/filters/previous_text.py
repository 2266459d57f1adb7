"""The word splitting of mixforge.filters.text before issue #20 (frozen copy, commit 63e0530): the reference
that the optimised words are compared with in test_shared_words.py. Not used by the library."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.filters.spacy_tokenizer import special_case_keys, tokenize_chunk

# Whitespace as Python's str.isspace() (Unicode White_Space plus the separators \x1c-\x1f).
CHUNK_PATTERN = r"[^\s\x{1C}-\x{1F}]+"
# Chunks that spaCy keeps as one token unless they are a special case ("cannot", "gonna").
SIMPLE_CHUNK = r"^(?:\p{L}+|[0-9]+)$"
# Chunks that spaCy splits into (letters, final punctuation), unless the chunk or its letters are a
# special case: "word," "word;" "word!" and, after a lowercase ASCII letter, "word.".
FAST_CHUNK = r"^(?:\p{L}+[,;:!?]|[A-Za-z]*[a-z]\.)$"
# Languages written without spaces between words (LID labels, lowercase; ISO 639-1 and 639-3).
UNSPACED_LANGUAGES = frozenset(
    {
        "zh",
        "ja",
        "th",
        "ko",
        "yue",
        "wuu",
        "lo",
        "km",
        "my",
        "zho",
        "cmn",
        "jpn",
        "tha",
        "kor",
        "lao",
        "khm",
        "mya",
    }
)
# One character of an unspaced script (not a digit), or a CJK / fullwidth punctuation mark or symbol
# (，。「」：！？): each is a word in those languages' documents.
_UNSPACED_CHAR = (
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\x{30FC}\x{FF70}"
    r"[[\p{P}\p{S}]&&[\x{3000}-\x{303F}\x{FF00}-\x{FFEF}]]]--\p{Nd}"
)
UNSPACED_CHAR = "[" + _UNSPACED_CHAR + "]"
# A word of such a document: one such character with its combining marks, or a run of others.
UNSPACED_WORD_PART = UNSPACED_CHAR + r"\p{M}*|[^" + _UNSPACED_CHAR + "]+"
_TOKEN_CACHE: dict[str, list[str]] = {}
_TOKEN_CACHE_MAX = 200_000  # distinct complex chunks kept across batches (~50 MB)


@lru_cache(maxsize=1)
def _simple_specials() -> list[str]:
    keys = pl.Series(sorted(special_case_keys()), dtype=pl.String)
    return keys.filter(keys.str.contains(SIMPLE_CHUNK)).to_list()


@lru_cache(maxsize=1)
def _all_specials() -> list[str]:
    return sorted(special_case_keys())


def _tokens_of(chunks: list[str]) -> tuple[list[str], np.ndarray]:
    """Tokens of each chunk, flattened, and the number of tokens per chunk."""
    cache = _TOKEN_CACHE
    if len(cache) > _TOKEN_CACHE_MAX:
        cache.clear()
    flat: list[str] = []
    counts = np.empty(len(chunks), dtype=np.int64)
    for i, c in enumerate(chunks):
        t = cache.get(c)
        if t is None:
            t = cache[c] = tokenize_chunk(c)
        flat.extend(t)
        counts[i] = len(t)
    return flat, counts


def split_words(text: pl.Series, unspaced=None) -> tuple[pl.Series, np.ndarray]:
    """Words of each document: (flat words, words per document). spaCy English words; in the
    documents where the boolean array `unspaced` is true, unspaced-script characters are words
    of their own first (see the module docstring)."""
    n_docs = len(text)
    chunks = text.str.extract_all(CHUNK_PATTERN)
    chunk_counts = chunks.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = chunks.explode(empty_as_null=False, keep_nulls=False).rename("words")
    if len(flat) == 0:
        return flat, np.zeros(n_docs, dtype=np.int64)
    whole = None
    if unspaced is not None and np.asarray(unspaced, dtype=bool).any():
        flat, chunk_counts, whole = _split_unspaced(flat, chunk_counts, np.asarray(unspaced, dtype=bool))
    return _tokenize_chunks(flat, chunk_counts, whole)


def _split_unspaced(
    chunks: pl.Series, counts: np.ndarray, unspaced: np.ndarray
) -> tuple[pl.Series, np.ndarray, np.ndarray | None]:
    """Cut the chunks of the `unspaced` documents that contain an unspaced-script character into
    such characters (with their combining marks) and the runs of other characters between them:
    (new flat chunks, chunks per document, which new chunks are such characters, kept whole)."""
    n_docs = len(counts)
    chunk_doc = np.repeat(np.arange(n_docs, dtype=np.int64), counts)
    cand = np.flatnonzero(unspaced[chunk_doc])
    if len(cand):
        cand = cand[chunks.gather(cand).str.contains(UNSPACED_CHAR).to_numpy()]
    if len(cand) == 0:
        return chunks, counts, None
    parts = chunks.gather(cand).str.extract_all(UNSPACED_WORD_PART)
    n_parts = parts.list.len().to_numpy().astype(np.int64)
    flat_parts = parts.explode().rename(chunks.name)
    # New chunk j is chunks[i] for an uncut chunk i, else part k of a cut chunk: indices into
    # the concatenation [chunks, flat parts].
    n_out = np.ones(len(chunks), dtype=np.int64)
    n_out[cand] = n_parts
    base = np.arange(len(chunks), dtype=np.int64)
    base[cand] = len(chunks) + np.concatenate([[0], np.cumsum(n_parts)[:-1]])
    step = np.zeros(len(chunks), dtype=np.int64)
    step[cand] = 1
    out_off = np.concatenate([[0], np.cumsum(n_out)])
    within = np.arange(int(out_off[-1]), dtype=np.int64) - np.repeat(out_off[:-1], n_out)
    idx = np.repeat(base, n_out) + within * np.repeat(step, n_out)
    out = pl.concat([chunks, flat_parts]).gather(idx)
    whole = np.zeros(len(out), dtype=bool)
    whole[idx >= len(chunks)] = flat_parts.str.contains(UNSPACED_CHAR).to_numpy()[
        idx[idx >= len(chunks)] - len(chunks)
    ]
    return out, np.bincount(chunk_doc, weights=n_out, minlength=n_docs).astype(np.int64), whole


def _tokenize_chunks(
    flat: pl.Series, chunk_counts: np.ndarray, whole: np.ndarray | None
) -> tuple[pl.Series, np.ndarray]:
    """spaCy English words of whitespace-free chunks (`whole`: chunks kept as one word), grouped
    per document by `chunk_counts`: (flat words, words per document)."""
    n_docs = len(chunk_counts)
    specials = _simple_specials()
    simple = (flat.str.contains(SIMPLE_CHUNK) & ~flat.is_in(specials)).to_numpy()
    if whole is not None:
        simple |= whole
    if simple.all():
        return flat, chunk_counts
    # An output word is a simple chunk (index into `flat`), one of the two parts of a "fast" chunk
    # (vectorised split), or a token of a complex chunk (distinct chunks tokenized in Python,
    # cached): indices into the concatenation [flat, fast parts, complex tokens].
    rest = np.flatnonzero(~simple)
    rest_chunks = flat.gather(rest)
    head = rest_chunks.str.slice(0, rest_chunks.str.len_chars() - 1)
    fast_mask = (
        rest_chunks.str.contains(FAST_CHUNK) & ~head.is_in(specials) & ~rest_chunks.is_in(_all_specials())
    ).to_numpy()
    fast_idx, complex_idx = rest[fast_mask], rest[~fast_mask]
    fast_chunks = rest_chunks.filter(pl.Series(fast_mask))
    fast_parts = (
        pl.DataFrame({"a": head.filter(pl.Series(fast_mask)), "b": fast_chunks.str.slice(-1)})
        .select(pl.concat_list("a", "b").alias("p"))["p"]
        .explode()
    )
    frame = pl.DataFrame({"c": flat.gather(complex_idx)}).with_columns(u=pl.col("c").rank("dense").cast(pl.Int64) - 1)
    u = frame["u"].to_numpy()
    uniq = frame.unique("u").sort("u")["c"]
    tok_flat, tok_counts = _tokens_of(uniq.to_list())
    tok_off = np.concatenate([[0], np.cumsum(tok_counts)])
    n_tok = np.ones(len(flat), dtype=np.int64)
    n_tok[fast_idx] = 2
    n_tok[complex_idx] = tok_counts[u]
    base = np.arange(len(flat), dtype=np.int64)
    base[fast_idx] = len(flat) + 2 * np.arange(len(fast_idx), dtype=np.int64)
    base[complex_idx] = len(flat) + len(fast_parts) + tok_off[u]
    out_off = np.concatenate([[0], np.cumsum(n_tok)])
    total = int(out_off[-1])
    step = np.zeros(len(flat), dtype=np.int64)
    step[rest] = 1
    within = np.arange(total, dtype=np.int64) - np.repeat(out_off[:-1], n_tok)
    idx = np.repeat(base, n_tok) + within * np.repeat(step, n_tok)
    words = pl.concat([flat, fast_parts.rename("words"), pl.Series("words", tok_flat, dtype=pl.String)]).gather(idx)
    chunk_doc = np.repeat(np.arange(n_docs, dtype=np.int64), chunk_counts)
    counts = np.bincount(chunk_doc, weights=n_tok, minlength=n_docs).astype(np.int64)
    return words, counts


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
        return Segments(
            self.values.filter(pl.Series(m)),
            doc,
            np.bincount(doc, minlength=self.n_docs).astype(np.int64),
            self.n_docs,
        )

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

    `lang` (LID labels such as ISO 639-1 codes, or null) and `url` are optional per-document
    columns. Documents whose `lang` is in `unspaced_languages` get the character-based word
    fallback for unspaced scripts (module docstring); pass an empty set to turn it off.
    `default_language` is the language language-dependent rules (stop words) assume for
    documents without a `lang` (`FilterConfig.default_language`); it does not change words.
    """

    def __init__(
        self, text, lang=None, url=None, unspaced_languages=UNSPACED_LANGUAGES, default_language: str = "en"
    ) -> None:
        self.text_arrow = as_string_array(text)
        self.text = pl.Series("text", self.text_arrow)
        self.n_docs = len(self.text)
        self.lang = None if lang is None else pl.Series("lang", as_string_array(lang))
        self.default_language = default_language
        self.unspaced_languages = frozenset(x.lower() for x in unspaced_languages)
        self.url = None
        if url is not None:
            url = url.to_arrow() if isinstance(url, pl.Series) else url
            url = url.combine_chunks() if isinstance(url, pa.ChunkedArray) else url
            self.url = pl.Series(
                "url",
                pa.array(url, pa.large_string()) if not isinstance(url, pa.Array) else url.cast(pa.large_string()),
            )

    @cached_property
    def char_len(self) -> np.ndarray:
        return self.text.str.len_chars().to_numpy().astype(np.int64)

    def count_literal(self, needle: str) -> np.ndarray:
        """Non-overlapping occurrences of `needle` per document (like str.count)."""
        return self.text.str.count_matches(needle, literal=True).to_numpy().astype(np.int64)

    @cached_property
    def unspaced(self) -> np.ndarray | None:
        """Per document: whether its language is written without spaces (None: no `lang`)."""
        if self.lang is None or not self.unspaced_languages:
            return None
        lang = self.lang.str.to_lowercase()
        known = sorted(self.unspaced_languages)
        return (lang.is_in(known) | lang.str.extract(r"^([^-_]+)[-_]", 1).is_in(known).fill_null(False)).to_numpy()

    @cached_property
    def words(self) -> Segments:
        values, counts = split_words(self.text, self.unspaced)
        return Segments(values, np.repeat(np.arange(self.n_docs, dtype=np.int64), counts), counts, self.n_docs)

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
