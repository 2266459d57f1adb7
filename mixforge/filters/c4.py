"""C4 quality heuristics, vectorised (semantics of datatrove's `C4QualityFilter`, split on lines).

Per line (Python `splitlines`, each stripped), in datatrove's order: a word longer than
`max_word_length` removes the line; citations are deleted; a line not ending in terminal
punctuation, or with fewer than `min_words_per_line` words, is removed; then on the surviving
lines: "lorem ipsum" fails the document, "javascript" removes the line, "{" fails the document,
policy/cookie phrases remove the line. The kept lines' sentences are counted.

Sub-rules, in order (drop_reason `c4.<sub_rule>`): `lorem_ipsum`, `curly_bracket`,
`too_few_sentences`. Features: `c4.n_sentences`, `c4.lines_removed` (non-blank lines removed),
`c4.chars_removed`. The edited text is "\\n".join(kept lines).strip(), as in datatrove.

Sentences are counted as datatrove does, with spaCy's sentencizer over spaCy's English tokens
(`count_sentences`, on the words of `mixforge.filters.text.split_words`): "Mr." or "e.g." are one
token, hence not boundaries.

Languages: line rules are script-agnostic (the keyword lists are English); terminal punctuation is
C4's ASCII set, and words per line are whitespace-separated runs (as datatrove; the character
fallback of `mixforge.filters.text` for unspaced scripts does not apply here), so CJK/Thai text
(lines ending in 。！？, without spaces: fewer than `min_words_per_line`) loses most lines: use
annotate mode or disable for such languages.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from mixforge.filters.base import Evaluation, RuleSet
from mixforge.filters.config import C4Config
from mixforge.filters.spacy_tokenizer import sentencizer_punct_chars
from mixforge.filters.text import TextBatch, load_tokenizer, split_words

CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
POLICY_SUBSTRINGS = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
]


def count_sentences(lines: pl.Series) -> np.ndarray:
    """Sentences per line as spaCy's Sentencizer over spaCy English tokens (datatrove's
    `split_into_sentences`): a sentence starts at the first token after a sentence-final
    punctuation token ("." "!" "?" ...) that is neither such a token nor all punctuation. A run of
    whitespace other than one space is a token of its own in spaCy (it can start a sentence):
    it is stood for by a NUL token here."""
    n = len(lines)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    marked = lines.str.replace_all(r"\s{2,}|[^\S ]", " \x00 ")
    words, counts = split_words(marked)
    out = (counts > 0).astype(np.int64)
    if len(words) == 0:
        return out
    final = words.is_in(sentencizer_punct_chars()).to_numpy()
    starter = ~final & ~words.str.contains(r"^\p{P}+$").to_numpy()
    line_of = np.repeat(np.arange(n, dtype=np.int64), counts)
    seen = np.cumsum(final)  # sentence-final tokens up to and including each token
    before_line = np.concatenate([[0], np.cumsum(np.bincount(line_of, weights=final, minlength=n))[:-1]]).astype(
        np.int64
    )
    idx = np.flatnonzero(starter)
    prev = np.empty(len(idx), dtype=np.int64)
    if len(idx):
        prev[0] = before_line[line_of[idx[0]]]
        prev[1:] = seen[idx[:-1]]
        first_in_line = np.r_[True, line_of[idx[1:]] != line_of[idx[:-1]]]
        prev[first_in_line] = before_line[line_of[idx[first_in_line]]]
    new_start = seen[idx] - prev > 0
    return out + np.bincount(line_of[idx[new_start]], minlength=n)


def negative_is_off(limit):
    """A limit where any negative number turns the rule off, as null does (datatrove's C4 filter
    disables a rule with -1)."""
    return limit if limit is not None and limit >= 0 else None


class C4Quality(RuleSet):
    name = "c4"
    config_class = C4Config

    def setup(self) -> None:
        load_tokenizer()

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c, name = self.config, self.name
        n_docs = batch.n_docs
        ev = Evaluation(n_docs)
        lines = batch.lines
        raw = lines.values
        line = raw.str.strip_chars()
        n_lines = len(line)
        alive = np.ones(n_lines, dtype=bool)
        max_word_length = negative_is_off(c.max_word_length)
        if max_word_length is not None and n_lines:
            long_line = (line.str.len_chars() > max_word_length).to_numpy()
            if long_line.any():
                idx = np.flatnonzero(long_line)
                longest = line.gather(idx).str.extract_all(r"\S+").list.eval(pl.element().str.len_chars()).list.max()
                alive[idx[(longest.fill_null(0).to_numpy() > max_word_length)]] = False
        n_words = line.str.count_matches(r"\S+").to_numpy()
        if c.remove_citations and n_lines:
            line = line.str.replace_all(CITATION, "")
        if c.filter_no_terminal_punct and n_lines:
            alive &= line.str.contains(r"[.?!\"']$").to_numpy() & ~line.str.ends_with("...").to_numpy()
        if negative_is_off(c.min_words_per_line) is not None:
            alive &= n_words >= c.min_words_per_line
        lower = line.str.to_lowercase()
        lorem = (
            alive & lower.str.contains("lorem ipsum", literal=True).to_numpy()
            if c.filter_lorem_ipsum
            else np.zeros(n_lines, bool)
        )
        alive &= ~lorem
        if c.filter_javascript:
            alive &= ~lower.str.contains("javascript", literal=True).to_numpy()
        curly = (
            alive & line.str.contains("{", literal=True).to_numpy()
            if c.filter_curly_bracket
            else np.zeros(n_lines, bool)
        )
        alive &= ~curly
        if c.filter_policy and n_lines:
            alive &= ~lower.str.contains_any(POLICY_SUBSTRINGS).to_numpy()

        kept = alive
        sentences = np.zeros(n_lines, dtype=np.int64)
        if kept.any():
            kept_idx = np.flatnonzero(kept)
            kl = line.gather(kept_idx)
            sentences[kept_idx] = count_sentences(kl)
        n_sentences = lines.per_doc_sum(sentences)

        ev.add_rule(f"{name}.lorem_ipsum", lines.per_doc_count(lorem) > 0)
        ev.add_rule(f"{name}.curly_bracket", lines.per_doc_count(curly) > 0)
        ev.threshold(f"{name}.too_few_sentences", n_sentences, below=negative_is_off(c.min_num_sentences))

        edited = self._join_kept(line, lines.doc, kept, n_docs)
        nonblank = (raw.str.strip_chars().str.len_bytes() > 0).to_numpy() if n_lines else np.zeros(0, bool)
        lines_removed = lines.per_doc_count(nonblank & ~kept)
        chars_removed = batch.char_len - pl.Series(edited).str.len_chars().to_numpy()
        if c.remove_lines:  # the edit the Filter applies to kept documents in drop mode
            ev.text, ev.lines_removed, ev.chars_removed = edited, lines_removed, chars_removed
        ev.add_feature(f"{name}.n_sentences", n_sentences)
        ev.add_feature(f"{name}.lines_removed", lines_removed)
        ev.add_feature(f"{name}.chars_removed", chars_removed)
        return ev

    @staticmethod
    def _join_kept(line: pl.Series, doc: np.ndarray, kept: np.ndarray, n_docs: int) -> pa.Array:
        out = pl.Series("text", [""] * n_docs, dtype=pl.String)
        if kept.any():
            frame = pl.DataFrame({"d": doc[kept], "line": line.filter(pl.Series(kept))})
            joined = frame.group_by("d", maintain_order=True).agg(pl.col("line").str.join("\n").str.strip_chars())
            out = out.scatter(joined["d"].to_numpy(), joined["line"])
        return out.to_arrow().cast(pa.large_string())
