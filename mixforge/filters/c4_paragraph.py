"""The C4 paragraph rule (mC4's `paragraph_filter`, as datatrove 0.10.1's `C4ParagraphFilter` applies it).

A document passes when it has at least `min_paragraphs` lines (`text.split("\\n")`, unstripped) of at least
`min_paragraph_len` characters. datatrove's test is "fewer than 3 lines, or the shortest of the 3 longest
lines is under 200 characters": the same decisions at the defaults (3, 200). datatrove also takes the 3
longest whatever `min_paragraphs` is; here the count is the setting.

Sub-rule (drop_reason): `c4_paragraph.too_few_paragraphs`. Feature: `c4_paragraph.long_paragraphs`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mixforge.filters.base import Evaluation, Measure, RuleSet, RuleSetConfigBase
from mixforge.filters.text import TextBatch


class C4ParagraphConfig(RuleSetConfigBase):
    name: Literal["c4_paragraph"] = Field(
        "c4_paragraph", description="Rule set: mC4's paragraph rule (datatrove's C4ParagraphFilter)."
    )
    min_paragraphs: int = Field(3, ge=1, description="Fail with fewer long lines than this (`too_few_paragraphs`).")
    min_paragraph_len: int = Field(200, ge=0, description="Characters a line needs to count as a paragraph.")


class C4Paragraph(RuleSet):
    config_class = C4ParagraphConfig  # defining the class registers it

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c, ev = self.config, Evaluation(batch.n_docs)
        lines = batch.newline_lines
        long = lines.values.str.len_chars().to_numpy() >= c.min_paragraph_len
        paragraphs = lines.per_doc_count(long)
        ev.add_rule(
            f"{self.name}.too_few_paragraphs",
            paragraphs < c.min_paragraphs,
            Measure(paragraphs, below=c.min_paragraphs),
        )
        ev.add_feature(f"{self.name}.long_paragraphs", paragraphs)
        return ev
