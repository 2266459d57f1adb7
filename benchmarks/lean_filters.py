"""Lean reference kernels for the features of the four heuristic rule sets (issue #20): the speed to compare with.

    from benchmarks.lean_filters import lean_features
    features = lean_features(text)   # pa.Array / pl.Series of documents -> {"gopher_quality.n_words": ndarray, ...}

One pass over a batch, Arrow/Polars/numpy only, with no concern but speed: words are Arrow's
whitespace split (no spaCy tokenizer, no special cases), sentences are runs ending in . ! ? before a
space or the end, and `dup_<n>_gram` is the characters of words covered by a repeated n-gram's later
occurrences (an upper bound of datatrove's greedy scan). Every other feature has the rule sets'
definition (`mixforge.filters.gopher_quality`, `gopher_repetition`, `fineweb`, `c4`): the same
segmentations (lines, paragraphs), thresholds, duplicate counting and ratios, so the work per byte
is that of the real rule sets minus their exact-tokenizer and exact-scan costs. These kernels are
the benchmark's yardstick (benchmarks/bench_filter_kernels.py): frozen, not optimised with the rule sets.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
TERMINAL = r"[!.?\x{3002}\x{FF01}\x{FF1F}]$"
_MIX = np.uint64(0x9E3779B97F4A7C15)
_DOC_MIX = np.uint64(0xC2B2AE3D27D4EB4F)


def _flat(lists: pa.Array) -> tuple[pl.Series, np.ndarray, np.ndarray]:
    """A list array -> (flat values, document of each value, values per document)."""
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pl.Series(pc.list_flatten(lists))
    return values, np.repeat(np.arange(len(counts), dtype=np.int64), counts), counts


def _div(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.zeros(np.broadcast(a, b).shape)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _dups(values: pl.Series, doc: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per document: segments equal to an earlier one of the same document, and their characters."""
    if len(values) == 0:
        return np.zeros(n_docs), np.zeros(n_docs)
    repeat = ~pl.DataFrame({"d": doc, "v": values}).select(pl.struct("d", "v").is_first_distinct()).to_series()
    repeat = repeat.to_numpy()
    chars = values.str.len_chars().to_numpy()
    return (
        np.bincount(doc[repeat], minlength=n_docs).astype(np.float64),
        np.bincount(doc, weights=np.where(repeat, chars, 0), minlength=n_docs),
    )


def lean_features(text) -> dict[str, np.ndarray]:
    if isinstance(text, pl.Series):
        text = text.to_arrow()
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = pc.fill_null(text.cast(pa.large_string()), "")
    s = pl.Series(text)
    n = len(s)
    char_len = s.str.len_chars().to_numpy().astype(np.float64)
    out: dict[str, np.ndarray] = {}

    # words: one whitespace split, lengths and hashes once
    words, wdoc, wcount = _flat(pc.utf8_split_whitespace(text))
    wlen = words.str.len_chars().to_numpy().astype(np.int64)
    whash = words.hash(seed=0x5EED).to_numpy()
    alpha = words.str.contains(r"\p{L}").to_numpy()
    symbol = ~words.str.contains(r"[^\p{P}\p{S}]").to_numpy()

    # gopher_quality
    n_ns = np.bincount(wdoc[~symbol], minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gopher_quality.mean_word_length"] = (
            np.bincount(wdoc, weights=np.where(symbol, 0, wlen), minlength=n) / n_ns
        )
    out["gopher_quality.n_words"] = n_ns
    out["gopher_quality.hash_ratio"] = _div(s.str.count_matches("#", literal=True).to_numpy(), wcount)
    ell = s.str.count_matches(r"\.\.\.|…").to_numpy()
    out["gopher_quality.ellipsis_ratio"] = _div(ell, wcount)
    lines, ldoc, lcount = _flat(pc.split_pattern_regex(text, r"\r\n|[\n\r\x0B\x0C\x1C\x1D\x1E\x85\x{2028}\x{2029}]"))
    bullet = lines.str.contains(r"^\s*[•-]").to_numpy()
    ell_line = lines.str.contains(r"(?:\.\.\.|…)\s*$").to_numpy()
    out["gopher_quality.bullet_lines_ratio"] = _div(np.bincount(ldoc[bullet], minlength=n), lcount)
    out["gopher_quality.ellipsis_lines_ratio"] = _div(np.bincount(ldoc[ell_line], minlength=n), lcount)
    out["gopher_quality.alpha_words_ratio"] = _div(np.bincount(wdoc[alpha], minlength=n), wcount)
    stop = words.is_in(list(STOP_WORDS)).to_numpy()
    frame = pl.DataFrame({"d": wdoc[stop], "h": whash[stop]}).unique()
    out["gopher_quality.n_stop_words"] = np.bincount(frame["d"].to_numpy(), minlength=n).astype(np.float64)

    # gopher_repetition
    paras, pdoc, pcount = _flat(pc.split_pattern_regex(pc.utf8_trim_whitespace(text), r"\n{2,}"))
    dn, dc = _dups(paras, pdoc, n)
    out["gopher_repetition.dup_para_frac"] = _div(dn, pcount)
    out["gopher_repetition.dup_para_char_frac"] = _div(dc, char_len)
    nl, nldoc, nlcount = _flat(pc.split_pattern_regex(text, r"\n+"))
    dn, dc = _dups(nl, nldoc, n)
    out["gopher_repetition.dup_line_frac"] = _div(dn, nlcount)
    out["gopher_repetition.dup_line_char_frac"] = _div(dc, char_len)
    dmix = wdoc.astype(np.uint64) * _DOC_MIX
    g, glen = whash.copy(), wlen.copy()
    for k in range(2, 11):
        m = len(whash) - k + 1
        if m <= 0:
            out[f"gopher_repetition.{'top' if k <= 4 else 'dup'}_{k}_gram"] = np.zeros(n)
            continue
        with np.errstate(over="ignore"):
            g = g[:m] * _MIX + whash[k - 1 :]
        glen = glen[:m] + wlen[k - 1 :]
        valid = wdoc[:m] == wdoc[k - 1 :]
        key = pl.Series(np.where(valid, g ^ dmix[:m], np.uint64(0)))
        if k <= 4:
            cnt = pl.DataFrame({"k": key}).select(pl.len().over("k")).to_series().to_numpy()
            score = np.where(valid, cnt * (glen + k - 1), 0)
            best = pl.DataFrame({"d": wdoc[:m], "s": score}).group_by("d").agg(pl.col("s").max())
            top = np.zeros(n)
            top[best["d"].to_numpy()] = best["s"].to_numpy()
            out[f"gopher_repetition.top_{k}_gram"] = _div(top, char_len)
        else:
            later = valid & ~key.is_first_distinct().to_numpy()
            cover = np.zeros(len(whash) + 1, dtype=np.int64)
            starts = np.flatnonzero(later)
            np.add.at(cover, starts, 1)
            np.add.at(cover, starts + k, -1)
            covered = np.cumsum(cover[:-1]) > 0
            out[f"gopher_repetition.dup_{k}_gram"] = _div(
                np.bincount(wdoc, weights=np.where(covered, wlen, 0), minlength=n), char_len
            )

    # fineweb_quality: non-blank "\n" lines
    fl, fdoc, _ = _flat(pc.split_pattern(text, "\n"))
    keep = (fl.str.strip_chars().str.len_bytes() > 0).to_numpy()
    fl, fdoc = fl.filter(pl.Series(keep)), fdoc[keep]
    fcount = np.bincount(fdoc, minlength=n)
    out["fineweb_quality.line_punct_ratio"] = _div(
        np.bincount(fdoc[fl.str.contains(TERMINAL).to_numpy()], minlength=n), fcount
    )
    out["fineweb_quality.short_line_ratio"] = _div(
        np.bincount(fdoc[(fl.str.len_chars() <= 30).to_numpy()], minlength=n), fcount
    )
    newlines = s.str.count_matches("\n", literal=True).to_numpy()
    out["fineweb_quality.char_dup_ratio"] = _div(_dups(fl, fdoc, n)[1], char_len - newlines)
    out["fineweb_quality.list_ratio"] = _div(newlines, wcount)

    # c4: line rules on stripped lines, sentences of the kept ones
    line = lines.str.strip_chars()
    lower = line.str.to_lowercase()
    n_line_words = line.str.count_matches(r"\S+").to_numpy()
    kept = (
        line.str.contains(r"[.?!\"']$").to_numpy()
        & ~line.str.ends_with("...").to_numpy()
        & (n_line_words >= 3)
        & ~lower.str.contains_any(
            ["javascript", "lorem ipsum", "{", "terms of use", "privacy policy", "cookie"]
        ).to_numpy()
    )
    sentences = line.filter(pl.Series(kept)).str.count_matches(r"[.!?]+(?:\s|$)").to_numpy()
    out["c4.n_sentences"] = np.bincount(ldoc[kept], weights=sentences, minlength=n)
    nonblank = (line.str.len_bytes() > 0).to_numpy()
    out["c4.lines_removed"] = np.bincount(ldoc[nonblank & ~kept], minlength=n).astype(np.float64)
    kept_chars = np.bincount(ldoc[kept], weights=line.str.len_chars().to_numpy()[kept] + 1, minlength=n)
    out["c4.chars_removed"] = char_len - np.maximum(kept_chars - 1, 0)
    return out
