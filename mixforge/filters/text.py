"""Vectorised text segmentation shared by all rule sets.

A `TextBatch` wraps one column of documents and computes, lazily and once, the segmentations the
rules need (words, lines, paragraphs) as *flat* Polars series plus a numpy array of document
indices. Per-document statistics are then `numpy.bincount` over those indices: no Python loop
per document.

Words are exactly datatrove's `split_into_words` for English, i.e. spaCy's rule-based English
tokenizer with whitespace tokens dropped (see `mixforge.filters.spacy_tokenizer`): the text is cut
into whitespace-separated chunks (vectorised); chunks that are a plain run of letters or of ASCII
digits (most of them) are one word; the distinct remaining chunks of the batch ("her;--but",
"Mr.", "don't", "(e.g.", "3.5%", URLs ...) go once each through the ported spaCy algorithm compiled
(`mixforge.filters.tokenizer_kernel`), and the few where a special case could apply through the Python
port itself, with a cache shared across batches. Like datatrove with its default language, this applies to every
script: without a language, a run of Han/Kana/Thai characters without spaces is one word.

Character-based fallback for unspaced scripts: in documents whose `lang` label is in
`TextBatch.unspaced_languages` (default `UNSPACED_LANGUAGES`: zh, ja, th, ko, yue, wuu, lo, km,
my and their ISO 639-3 codes; a label such as "zh-Hant" or "zho_Hans" counts by its part before
"-"/"_"), each whitespace-separated chunk that contains a Han, Hiragana, Katakana (with the
prolonged sound mark ー), Thai, Lao, Khmer or Myanmar character, or a CJK / fullwidth punctuation
mark or symbol (，。「」：！？), is cut first: each such character, with the combining marks that
follow it, is a word of its own ("วั", "ខ្", "မြ"), and each run of other characters between them
is tokenized as above, on its own. So "我用Python写代码(e.g. don't)。" gives 我 用 Python 写 代 码
( e.g. do n't ) 。. Digits (ASCII, fullwidth, Thai ๑๒๓) are not cut. Korean Hangul is written with
spaces and is not cut (only Hanja in Korean text are). The cut is one Polars regex `extract_all`
over the chunks of those documents that contain such characters, re-indexed with numpy; the words
of documents in other languages, or without a language (or with `unspaced_languages` empty), are
exactly the English ones above.
"""

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
_TOKEN_CACHE_MAX = 200_000  # distinct chunks left to the Python port, kept across batches


@lru_cache(maxsize=1)
def _simple_specials() -> list[str]:
    keys = pl.Series(sorted(special_case_keys()), dtype=pl.String)
    return keys.filter(keys.str.contains(SIMPLE_CHUNK)).to_list()


@lru_cache(maxsize=1)
def _all_specials() -> list[str]:
    return sorted(special_case_keys())


def _tokens_of(chunks: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Tokens of each chunk, flattened, and the number of tokens per chunk: the compiled loop
    (`tokenizer_kernel`) for most chunks, the Python port (cached across batches) for those it leaves."""
    from mixforge.filters.tokenizer_kernel import tokenize_chunks  # numba: imported where words are split

    listed = chunks.to_list()
    back, counts, chunk, start, end = tokenize_chunks(listed)
    spans = pl.DataFrame({"c": chunks.gather(chunk), "a": start, "n": end - start})
    flat = spans.select(pl.col("c").str.slice(pl.col("a"), pl.col("n")))["c"]
    if not back:
        return flat.rename("words"), counts
    cache = _TOKEN_CACHE
    if len(cache) > _TOKEN_CACHE_MAX:
        cache.clear()
    slow: list[str] = []
    for k in back:
        c = listed[k]
        t = cache.get(c)
        if t is None:
            t = cache[c] = tokenize_chunk(c)
        slow.extend(t)
        counts[k] = len(t)
    # kernel tokens and port tokens back in chunk order: indices into [flat, slow]
    is_back = np.zeros(len(listed), dtype=bool)
    is_back[back] = True
    n_kernel = len(flat)
    base = np.zeros(len(listed), dtype=np.int64)
    kernel_counts = np.where(is_back, 0, counts)
    slow_counts = np.where(is_back, counts, 0)
    base[~is_back] = (np.cumsum(kernel_counts) - kernel_counts)[~is_back]
    base[is_back] = n_kernel + (np.cumsum(slow_counts) - slow_counts)[is_back]
    idx = _expand(base, np.ones(len(listed), dtype=np.int64), counts)
    return pl.concat([flat.rename("words"), pl.Series("words", slow, dtype=pl.String)]).gather(idx), counts


def load_tokenizer() -> None:
    """Load the word splitter's compiled code and tables (a rule set's `setup`: once per worker)."""
    from mixforge.filters.tokenizer_kernel import warm_up

    warm_up()


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


def _distinct(flat: pl.Series, whole: np.ndarray | None) -> tuple[np.ndarray, pl.Series, np.ndarray | None]:
    """Group equal chunks: (distinct id of each chunk, the distinct chunks, their `whole` flag). Grouped
    by 64-bit hash (fast), checked string by string; on a hash collision, grouped by the strings."""
    key = flat.hash(seed=0x5EED).to_numpy()
    if whole is not None:
        key = key ^ (whole.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    groups = pl.DataFrame({"k": key}).with_row_index("i").group_by("k").agg(pl.col("i"))
    ids = np.empty(len(flat), dtype=np.int64)
    members = groups["i"]
    ids[members.explode().to_numpy()] = np.repeat(
        np.arange(len(groups), dtype=np.int64), members.list.len().to_numpy().astype(np.int64)
    )
    first = members.list.first().to_numpy()
    uniq = flat.gather(first)
    if not (uniq.gather(ids) == flat).all():  # a collision (about 1 in 10^8 batches): exact grouping
        frame = pl.DataFrame({"c": flat, "w": whole if whole is not None else np.zeros(len(flat), dtype=bool)})
        groups = frame.with_row_index("i").group_by("c", "w").agg(pl.col("i"))
        members = groups["i"]
        ids[members.explode().to_numpy()] = np.repeat(
            np.arange(len(groups), dtype=np.int64), members.list.len().to_numpy().astype(np.int64)
        )
        first = members.list.first().to_numpy()
        uniq = groups["c"]
    return ids, uniq, (whole[first] if whole is not None else None)


def _chunk_tokens(uniq: pl.Series, whole: np.ndarray | None) -> tuple[pl.Series, np.ndarray]:
    """spaCy English tokens of distinct whitespace-free chunks (`whole`: kept as one word):
    (flat tokens, tokens per chunk). A plain letter or digit run is one token, "word," two (a
    vectorised split); the rest go through the ported algorithm (`_tokens_of`)."""
    specials = _simple_specials()
    simple = (uniq.str.contains(SIMPLE_CHUNK) & ~uniq.is_in(specials)).to_numpy()
    if whole is not None:
        simple |= whole
    if simple.all():
        return uniq, np.ones(len(uniq), dtype=np.int64)
    # An output token is a simple chunk (index into `uniq`), one of the two parts of a "fast" chunk
    # (vectorised split), or a token of a complex chunk: indices into [uniq, fast parts, complex tokens].
    rest = np.flatnonzero(~simple)
    rest_chunks = uniq.gather(rest)
    head = rest_chunks.str.slice(0, rest_chunks.str.len_chars() - 1)
    fast_mask = (
        rest_chunks.str.contains(FAST_CHUNK) & ~head.is_in(specials) & ~rest_chunks.is_in(_all_specials())
    ).to_numpy()
    fast_idx, complex_idx = rest[fast_mask], rest[~fast_mask]
    fast_parts = (
        pl.DataFrame(
            {"a": head.filter(pl.Series(fast_mask)), "b": rest_chunks.filter(pl.Series(fast_mask)).str.slice(-1)}
        )
        .select(pl.concat_list("a", "b").alias("p"))["p"]
        .explode()
    )
    tok_flat, tok_counts = _tokens_of(uniq.gather(complex_idx))
    n_tok = np.ones(len(uniq), dtype=np.int64)
    n_tok[fast_idx] = 2
    n_tok[complex_idx] = tok_counts
    base = np.arange(len(uniq), dtype=np.int64)
    base[fast_idx] = len(uniq) + 2 * np.arange(len(fast_idx), dtype=np.int64)
    base[complex_idx] = (
        len(uniq) + len(fast_parts) + np.concatenate([[0], np.cumsum(tok_counts)[:-1]]).astype(np.int64)
    )
    step = np.zeros(len(uniq), dtype=np.int64)
    step[rest] = 1
    idx = _expand(base, step, n_tok)
    parts = [uniq.rename("words"), fast_parts.rename("words"), tok_flat]
    return pl.concat(parts).gather(idx), n_tok


def _expand(base: np.ndarray, step: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Concatenated ranges: for each i, `n[i]` indices base[i], base[i] + step[i], ..."""
    off = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    within = np.arange(int(off[-1]), dtype=np.int64) - np.repeat(off[:-1], n)
    return np.repeat(base, n) + within * np.repeat(step, n)


def _tokenize_chunks(
    flat: pl.Series, chunk_counts: np.ndarray, whole: np.ndarray | None
) -> tuple[pl.Series, np.ndarray]:
    """spaCy English words of whitespace-free chunks (`whole`: chunks kept as one word), grouped
    per document by `chunk_counts`: (flat words, words per document). Every test and split runs once
    per distinct chunk (natural text repeats its words), then the tokens are gathered per chunk."""
    n_docs = len(chunk_counts)
    ids, uniq, uniq_whole = _distinct(flat, whole)
    tokens, n_tok = _chunk_tokens(uniq, uniq_whole)
    if len(tokens) == len(uniq):  # one token per chunk: the chunks are the words
        return flat.rename("words"), chunk_counts
    tok_off = np.concatenate([[0], np.cumsum(n_tok)[:-1]]).astype(np.int64)
    per_chunk = n_tok[ids]
    words = tokens.gather(_expand(tok_off[ids], np.ones(len(ids), dtype=np.int64), per_chunk))
    chunk_doc = np.repeat(np.arange(n_docs, dtype=np.int64), chunk_counts)
    return words, np.bincount(chunk_doc, weights=per_chunk, minlength=n_docs).astype(np.int64)


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

    def take(self, docs: np.ndarray) -> Segments:
        """The segments of documents `docs` (increasing indices), renumbered 0..len(docs)-1."""
        keep = np.zeros(self.n_docs, dtype=bool)
        keep[docs] = True
        m = keep[self.doc]
        rank = np.cumsum(keep) - 1
        return Segments(self.values.filter(pl.Series(m)), rank[self.doc[m]], self.counts[docs], len(docs))

    def replace(self, rows: np.ndarray, new: Segments) -> Segments:
        """These segments with those of documents `rows` (increasing) replaced by `new` (numbered as `rows`)."""
        changed = np.zeros(self.n_docs, dtype=bool)
        changed[rows] = True
        m = ~changed[self.doc]
        doc = np.concatenate([self.doc[m], rows[new.doc]])
        order = np.argsort(doc, kind="stable")
        counts = self.counts.copy()
        counts[rows] = new.counts
        return Segments(
            pl.concat([self.values.filter(pl.Series(m)), new.values]).gather(order), doc[order], counts, self.n_docs
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

    # Computed once and shared by every rule set: `take` and `replace` carry them over by index.
    _PER_DOC = ("char_len", "unspaced", "newline_count")
    _SEGMENTS = ("words", "lines", "newline_lines")
    _PER_WORD = ("word_len", "word_hash")

    def _derived(self, text: pa.Array, lang, url) -> TextBatch:
        out = TextBatch.__new__(TextBatch)
        out.text_arrow, out.text, out.n_docs = text, pl.Series("text", text), len(text)
        out.lang, out.url = lang, url
        out.default_language, out.unspaced_languages = self.default_language, self.unspaced_languages
        return out

    def take(self, docs) -> TextBatch:
        """The batch of documents `docs` (increasing indices: the survivors of a drop-mode rule set), with
        every segmentation already computed here cut down to them by index, not computed again."""
        docs = np.asarray(docs, dtype=np.int64)
        if len(docs) == self.n_docs:
            return self
        idx = pa.array(docs)
        out = self._derived(
            self.text_arrow.take(idx),
            None if self.lang is None else self.lang.gather(docs),
            None if self.url is None else self.url.gather(docs),
        )
        done = self.__dict__
        for name in self._PER_DOC:
            if name in done:
                out.__dict__[name] = None if done[name] is None else done[name][docs]
        for name in self._SEGMENTS:
            if name in done:
                out.__dict__[name] = done[name].take(docs)
        if "words" in done:
            keep = np.zeros(self.n_docs, dtype=bool)
            keep[docs] = True
            m = keep[self.words.doc]
            for name in self._PER_WORD:
                if name in done:
                    out.__dict__[name] = done[name][m]
        return out

    def replace(self, rows, text: pa.Array) -> TextBatch:
        """This batch with the text of documents `rows` (increasing) replaced by `text` (an editing rule
        set's output, one per row): their segmentations are computed again, the others' kept."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self
        text = as_string_array(text)
        mask = np.zeros(self.n_docs, dtype=bool)
        mask[rows] = True
        full = np.zeros(self.n_docs, dtype=np.int64)
        full[rows] = np.arange(len(rows))
        merged = pc.if_else(pa.array(mask), pc.take(text, pa.array(full)), self.text_arrow)
        out = self._derived(merged, self.lang, self.url)
        fresh = self._derived(text, None if self.lang is None else self.lang.gather(rows), None)
        done = self.__dict__
        for name in self._PER_DOC:
            if name in done and done[name] is not None:
                values = done[name].copy()
                values[rows] = getattr(fresh, name)
                out.__dict__[name] = values
            elif name in done:
                out.__dict__[name] = None
        for name in self._SEGMENTS:
            if name in done:
                out.__dict__[name] = done[name].replace(rows, getattr(fresh, name))
        return out

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
