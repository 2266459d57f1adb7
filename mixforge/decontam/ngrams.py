"""Word n-grams of benchmark items and documents, hashed the same way on both sides.

Normalisation (documents and benchmark items alike), in this order:
1. Unicode NFKC (compatibility forms folded: ligatures, full-width letters, superscripts);
2. lowercase (Unicode);
3. with `numbers` (the default, as datatrove's): every number, a run of decimal digits with at most one
   decimal part (`3`, `2013`, `3.14`, `1,000`), becomes `0`, so "2009-2011" and "2010-2013" match;
4. every run of characters that are not letters, digits or combining marks (Unicode categories L*, N*, M*)
   becomes one space: punctuation, symbols and whitespace all separate words;
5. split on whitespace.
Accents are kept (NFKC composes them; datatrove strips them).

A word's hash is `mixforge.dedup.hashing.hash_strings` of its UTF-8 bytes and an n-gram's is
`mixforge.dedup.minhash.ngram_hashes` of its words' hashes (salted): both defined on bytes only, so
an index stored today matches documents hashed by any later version. A text with fewer than n words
has no n-grams.

`word_spans` is the same normalisation one character at a time, keeping where each word is in the
original text: the cut mode uses it on the (few) contaminated documents only.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mixforge.dedup.hashing import hash_strings
from mixforge.dedup.minhash import ngram_hashes

NORMALIZATION = "nfkc-lower-numbers-lnm-words-v1"  # goes into the index key: change it when the rule above changes
NGRAM_SALT = 0x6465636F6E74616D  # "decontam"
_SEPARATORS = r"[^\p{L}\p{N}\p{M}]+"  # RE2
_DECIMAL_MARKS = ".,،٫⎖⎗⎘"  # datatrove's
_NUMBER = r"\p{Nd}+(?:[" + _DECIMAL_MARKS + r"]\p{Nd}+)?"


def normalized_word_lists(text: pa.Array | pa.ChunkedArray, numbers: bool = True) -> pa.ListArray:
    """Each text's words after the normalisation (a list<string> array; null text: no words)."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    text = pc.fill_null(text, "") if text.null_count else text
    norm = pc.utf8_lower(pc.utf8_normalize(text, "NFKC"))
    if numbers:
        norm = pc.replace_substring_regex(norm, _NUMBER, "0")
    words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, _SEPARATORS, " ")))
    flat, offsets = _flat(words)
    empty = pc.equal(pc.utf8_length(flat), 0)
    if not pc.any(empty).as_py():
        return words
    # an empty (or all-punctuation) text splits into one "" word: no word at all
    keep = pc.invert(empty)
    text_of_word = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    kept = np.zeros(len(offsets), np.int64)
    np.cumsum(np.bincount(text_of_word[np.asarray(keep)], minlength=len(offsets) - 1), out=kept[1:])
    return pa.ListArray.from_arrays(pa.array(kept, pa.int32()), flat.filter(keep))


def normalized_words(text: str, numbers: bool = True) -> list[str]:
    return normalized_word_lists(pa.array([text], pa.string()), numbers)[0].as_py()


def _flat(words: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    """The words of all texts in one array, and each text's word offsets (int64, len = texts + 1, from 0)."""
    offsets = np.asarray(words.offsets, dtype=np.int64)
    flat = words.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return flat, offsets - offsets[0]


def ngram_table(words: pa.ListArray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, offsets int64 len = texts + 1) of every text's word n-grams, in order: the k-th hash
    of text i is the n-gram starting at its k-th word. Texts with fewer than n words have none."""
    flat, offsets = _flat(words)
    lengths = np.diff(offsets)
    short = lengths < n
    if short.any():  # ngram_hashes gives a text of 0 < L < n words one shorter n-gram: none here
        keep = np.repeat(~short, lengths)
        flat = flat.filter(pa.array(keep))
        lengths = np.where(short, 0, lengths)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
    if len(flat) == 0:
        return np.zeros(0, np.uint64), np.zeros(len(lengths) + 1, np.int64)
    return ngram_hashes(hash_strings(flat), offsets, n, NGRAM_SALT)


def hash_ngram_texts(texts: list[str], n: int, numbers: bool = True) -> np.ndarray:
    """The n-gram hashes of texts that are one n-gram each (stop lists)."""
    hashes, offsets = ngram_table(normalized_word_lists(pa.array(list(texts), pa.string()), numbers), n)
    return hashes[offsets[:-1][np.diff(offsets) == 1]] if len(texts) else np.zeros(0, np.uint64)


@lru_cache(maxsize=65536)
def _char_class(ch: str) -> int:
    """2: a digit (after NFKC), 1: another word character (letter, digit or mark after NFKC), 0: a separator."""
    cats = [unicodedata.category(c) for c in unicodedata.normalize("NFKC", ch)]
    if any(c == "Nd" for c in cats):
        return 2
    return 1 if any(c[0] in "LNM" for c in cats) else 0


def word_spans(text: str, numbers: bool = True) -> tuple[list[str], list[tuple[int, int]]]:
    """The normalised words of `text` and each word's (start, end) character span in `text` itself.

    Runs of word characters (with `numbers`, a decimal mark between two digits too) are normalised
    together and split where the normalisation puts separators; each word gets its run's span (a run is
    nearly always one word).
    """
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    classes = [_char_class(ch) for ch in text] + [0]
    start = None
    for i in range(len(text) + 1):
        inside = classes[i] > 0 or (
            numbers
            and i < len(text)
            and text[i] in _DECIMAL_MARKS
            and i > 0
            and classes[i - 1] == 2
            and classes[i + 1] == 2
        )
        if inside:
            if start is None:
                start = i
            continue
        if start is not None:
            run = text[start:i]
            plain = run.isascii() and run.isalnum() and not (numbers and any(c.isdigit() for c in run))
            for word in [run.lower()] if plain else normalized_words(run, numbers):
                words.append(word)
                spans.append((start, i))
            start = None
    return words, spans


def ngrams_of_words(words: list[str], n: int) -> np.ndarray:
    """The n-gram hashes of one word list (as `ngram_table` hashes a document's words)."""
    hashes, _ = ngram_table(pa.array([words], pa.list_(pa.string())), n)
    return hashes
