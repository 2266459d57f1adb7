"""A stage's `reads` and `writes` are checked on every batch: a stage that adds an undeclared column,
loses one of its input, or needs one its input lacks fails its shard with a message naming both."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mixforge.runner import UndeclaredColumns, check_declared_columns
from mixforge.stage import Stage, StageResult


class AddsScore(Stage):
    name = "adds-score"
    writes = ("score", "feature_*")

    def process(self, batch, ctx):
        return StageResult(batch, None)


DOCS = pa.table({"id": ["a"], "text": ["hello"], "source": ["s"]})


def test_declared_additions_and_patterns_pass():
    check_declared_columns(AddsScore(), DOCS, DOCS.append_column("score", pa.array([0.5])))
    check_declared_columns(AddsScore(), DOCS, DOCS.append_column("feature_len", pa.array([5])))
    check_declared_columns(AddsScore(), DOCS, DOCS.append_column("url", pa.array([None], pa.string())))  # contract


@pytest.mark.parametrize(
    "kept, message",
    [
        (DOCS.append_column("other", pa.array([1])), r"wrote column\(s\) \['other'\] not declared"),
        (DOCS.drop_columns(["source"]), r"lost column\(s\) \['source'\]"),
    ],
)
def test_undeclared_additions_and_lost_columns_fail_naming_them(kept, message):
    with pytest.raises(UndeclaredColumns, match=message):
        check_declared_columns(AddsScore(), DOCS, kept)


def test_a_read_column_the_input_lacks_fails():
    class NeedsUrl(AddsScore):
        name = "needs-url"
        reads = ("text", "url")

    with pytest.raises(UndeclaredColumns, match=r"'needs-url' reads column\(s\) \['url'\]"):
        check_declared_columns(NeedsUrl(), DOCS, DOCS)
