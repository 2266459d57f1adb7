"""FineWeb quality heuristics, vectorised (semantics of datatrove's `FineWebQualityFilter`).

Lines are `text.split("\\n")` without blank ones. Sub-rules, in order (drop_reason
`fineweb_quality.<sub_rule>`): `empty` (no non-blank line), `line_punct_ratio`, `short_line_ratio`,
`char_dup_ratio`, `list_ratio`. Features: `fineweb_quality.line_punct_ratio`, `.short_line_ratio`,
`.char_dup_ratio`, `.list_ratio`.

Languages: terminal punctuation covers many scripts (datatrove's table); words as in
`mixforge.filters.text` (spaCy English tokens, as datatrove).
"""

from __future__ import annotations

import numpy as np

from mixforge.filters._punctuation import TERMINAL_PUNCTUATION
from mixforge.filters.base import Evaluation, RuleSet, safe_div
from mixforge.filters.config import FineWebQualityConfig
from mixforge.filters.text import TextBatch, load_tokenizer

_TERMINAL = sorted(TERMINAL_PUNCTUATION)


class FineWebQuality(RuleSet):
    name = "fineweb_quality"
    config_class = FineWebQualityConfig

    def setup(self) -> None:
        load_tokenizer()

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c, name = self.config, self.name
        ev = Evaluation(batch.n_docs)
        all_lines = batch.newline_lines
        lines = all_lines.filter((all_lines.values.str.strip_chars().str.len_bytes() > 0).to_numpy())
        n_lines = lines.counts.astype(np.float64)
        ev.add_rule(f"{name}.empty", n_lines == 0)

        ends_punct = lines.values.str.slice(-1).is_in(_TERMINAL).to_numpy()
        punct_ratio = safe_div(lines.per_doc_count(ends_punct), n_lines)
        ev.threshold(
            f"{name}.line_punct_ratio",
            punct_ratio,
            below=c.line_punct_thr,
            where=punct_ratio != 0 if c.line_punct_exclude_zero else None,
        )

        short = (lines.values.str.len_chars() <= c.short_line_length).to_numpy()
        short_ratio = safe_div(lines.per_doc_count(short), n_lines)
        ev.threshold(f"{name}.short_line_ratio", short_ratio, above=c.short_line_thr)

        _, dup_chars = lines.duplicates()
        dup_ratio = safe_div(dup_chars, batch.char_len - batch.newline_count)
        ev.threshold(f"{name}.char_dup_ratio", dup_ratio, above=c.char_duplicates_ratio)

        list_ratio = safe_div(batch.newline_count, batch.words.counts)
        ev.threshold(f"{name}.list_ratio", list_ratio, above=c.new_line_ratio)

        for key, val in (
            ("line_punct_ratio", punct_ratio),
            ("short_line_ratio", short_ratio),
            ("char_dup_ratio", dup_ratio),
            ("list_ratio", list_ratio),
        ):
            ev.add_feature(f"{name}.{key}", val)
        return ev
