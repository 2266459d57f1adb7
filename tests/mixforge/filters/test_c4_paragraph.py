"""The C4 paragraph rule set (issue #19): the same decisions as datatrove 0.10.1's `C4ParagraphFilter` on a few
hundred generated documents with lines around the 200-character limit, and through the filter stage."""

from __future__ import annotations

import heapq
import random

import pyarrow as pa
import pytest

from mixforge.filters import RULE_SETS, FilterConfig, LanguageIDConfig
from mixforge.filters.c4_paragraph import C4Paragraph, C4ParagraphConfig
from mixforge.stage import ShardContext
from mixforge.stages.filter import Filter

WORDS = "the quick brown fox jumps over a lazy dog while rivers run to the sea and é ü 漢字".split()


def datatrove_keeps(text: str) -> bool:
    """datatrove.pipeline.filters.c4_filters.C4ParagraphFilter.paragraph_filter, verbatim (3 and 200)."""
    lines = text.split("\n")
    return not (len(lines) < 3 or min(heapq.nlargest(3, [len(line) for line in lines])) < 200)


def line(rng: random.Random, length: int) -> str:
    out = ""
    while len(out) < length:
        out += rng.choice(WORDS) + " "
    return out[:length]


def documents(n: int, seed: int = 19) -> list[str]:
    rng = random.Random(seed)
    docs = ["", "\n\n", "x" * 600, ("y" * 200 + "\n") * 3, ("y" * 199 + "\n") * 3 + "z" * 10]
    while len(docs) < n:
        lengths = [rng.choice([0, 5, 80, 198, 199, 200, 201, 260, 900]) for _ in range(rng.randint(1, 7))]
        sep = rng.choice(["\n", "\n", "\r\n", "\n\n"])
        docs.append(sep.join(line(rng, k) for k in lengths) + rng.choice(["", "\n"]))
    return docs


def test_same_decisions_as_datatrove():
    docs = documents(400)
    ev = C4Paragraph().evaluate(docs)
    fails = ev.fails["c4_paragraph.too_few_paragraphs"]
    expected = [not datatrove_keeps(d) for d in docs]
    assert fails.tolist() == expected
    assert 0.2 < sum(expected) / len(expected) < 0.8  # both outcomes are well represented


def test_settings_and_feature():
    doc = "\n".join(["a" * 120] * 2 + ["b" * 30])
    ev = C4Paragraph(C4ParagraphConfig(min_paragraphs=2, min_paragraph_len=100)).evaluate([doc])
    assert ev.fails["c4_paragraph.too_few_paragraphs"].tolist() == [False]
    assert ev.features["c4_paragraph.long_paragraphs"].tolist() == [2]
    assert C4Paragraph().evaluate([doc]).fails["c4_paragraph.too_few_paragraphs"].tolist() == [True]


def test_through_the_filter_stage():
    assert RULE_SETS["c4_paragraph"] is C4Paragraph
    config = FilterConfig.model_validate(
        {"language_id": LanguageIDConfig(enabled=False).model_dump(), "rules": [{"name": "c4_paragraph"}]}
    )
    good, bad = "\n".join(["p" * 250] * 3), "short\nlines\nonly"
    batch = pa.table({"id": ["a", "b"], "text": [good, bad], "source": ["s", "s"]})
    result = Filter(config).process(batch, ShardContext("mem://shard", 0))
    assert result.kept.column("id").to_pylist() == ["a"]
    assert result.removed.column("drop_reason").to_pylist() == ["c4_paragraph.too_few_paragraphs"]


def test_bad_setting_refused():
    with pytest.raises(ValueError):
        C4ParagraphConfig(min_paragraphs=0)
