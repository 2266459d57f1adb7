"""Why was this dropped: the structured drop columns of `_removed/` (schema.DROP_FIELDS), for the filter's
rule sets and language ID, normalize's reader and stage drops, through the real shard runner."""

from __future__ import annotations

import glob

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.filters import Evaluation, FilterConfig, GopherQualityConfig, Measure
from mixforge.runner import run_stage
from mixforge.runs import StageLayout
from mixforge.shards import ReadConfig
from mixforge.stages.filter import Filter
from mixforge.stages.normalize import Normalize
from tests.helpers import prose, write_shard


def removed_rows(stage_dir: str) -> list[dict]:
    files = sorted(glob.glob(f"{stage_dir}/_removed/part-*.parquet"))
    for f in files:  # one schema for every stage: the drop columns last, in their order and types
        assert pq.read_schema(f).names[-len(S.DROP_FIELDS) :] == list(S.DROP_COLUMNS)
        assert [pq.read_schema(f).field(c).type for c in S.DROP_COLUMNS] == [f.type for f in S.DROP_FIELDS]
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_first_failing_rule_is_recorded_with_its_value_and_threshold():
    ev = Evaluation(4)
    values = np.array([0.5, 0.1, 0.9, np.nan])
    ev.threshold("r.low", values, below=0.3)
    ev.threshold("r.band", np.array([5.0, 1.0, 20.0, 7.0]), below=2, above=10)
    ev.add_rule("r.flag", [True, True, False, False])
    found = ev.failures()
    assert found.reason.tolist() == ["r.flag", "r.low", "r.band", None]  # first in check order, as first_failure
    assert found.reason.tolist() == ev.first_failure().tolist()
    assert found.op.tolist() == [None, "<", ">", None]
    assert found.value[1] == 0.1 and found.threshold[1] == 0.3
    assert found.value[2] == 20.0 and found.threshold[2] == 10  # the side it failed on
    assert np.isnan(found.value[0]) and np.isnan(found.threshold[0])  # a yes/no rule measures nothing


def test_measure_otherwise_names_the_other_way_to_fail():
    ev = Evaluation(3)
    score = np.array([0.9, 0.2, 0.95])
    fails = np.array([False, True, True])  # doc 2: high score, language not kept
    ev.add_rule("lang", fails, Measure(score, below=0.65, below_op="<=", otherwise="lang.not_in_keep_list"))
    found = ev.failures()
    assert found.reason.tolist() == [None, "lang", "lang"]  # drop_reason unchanged
    assert found.rule.tolist() == [None, "lang", "lang.not_in_keep_list"]
    assert found.op.tolist() == [None, "<=", None] and found.threshold[1] == 0.65


def test_filter_drops_name_rule_value_threshold_shard_and_row(tmp_path):
    good = prose(1, 8)
    symbols = "# " * 200 + good  # fails symbol_word_ratio (hash ratio) first, then nothing else before it
    short = "Too short to keep."  # fails word_count (and later rules): word_count is recorded
    shard = str(tmp_path / "in" / "s.parquet")
    write_shard(shard, [{"id": "good", "text": good}, {"id": "sym", "text": symbols}, {"id": "short", "text": short}])
    cfg = FilterConfig(language_id={"enabled": False}, rules=[{"name": "gopher_quality"}])
    out = str(tmp_path / "filter")
    summary = run_stage(Filter(cfg), StageLayout(out), [(0, shard)])
    assert summary["docs_kept"] == 1

    rows = {r["id"]: r for r in removed_rows(out)}
    sym, short_row = rows["sym"], rows["short"]
    assert short_row[S.DROP_REASON] == short_row[S.DROP_RULE] == "gopher_quality.word_count"
    assert short_row[S.DROP_OP] == "<" and short_row[S.DROP_THRESHOLD] == GopherQualityConfig().min_doc_words
    assert short_row[S.DROP_VALUE] == short_row["gopher_quality_n_words"]  # the measured feature itself
    assert (short_row[S.DROP_SHARD], short_row[S.DROP_ROW], short_row[S.DROP_UNIT]) == (shard, 2, "row")
    value = short_row[S.DROP_VALUE]
    assert short_row[S.DROP_DETAIL] == (
        f"{shard} row 2: gopher_quality.word_count: {value:g} < {GopherQualityConfig().min_doc_words}"
    )
    assert sym[S.DROP_RULE] == "gopher_quality.symbol_word_ratio" and sym[S.DROP_OP] == ">"
    assert sym[S.DROP_VALUE] == pytest.approx(sym["gopher_quality_hash_ratio"])
    assert sym[S.DROP_THRESHOLD] == GopherQualityConfig().max_symbol_word_ratio and sym[S.DROP_ROW] == 1
    assert sym[S.DROP_DETAIL].startswith(f"{shard} row 1: gopher_quality.symbol_word_ratio: ")


def test_language_id_drops_say_score_and_threshold_or_the_keep_list(tmp_path):
    english = prose(2, 6)
    shard = str(tmp_path / "in" / "s.parquet")
    write_shard(shard, [{"id": "en", "text": english}, {"id": "noise", "text": "1234 5678 " * 20}])
    cfg = FilterConfig(language_id={"enabled": True, "threshold": 0.6}, rules=[])
    out = str(tmp_path / "lid")
    run_stage(Filter(cfg), StageLayout(out), [(0, shard)])
    (noise,) = removed_rows(out)
    assert noise["id"] == "noise" and noise[S.DROP_REASON] == noise[S.DROP_RULE] == "lang"
    assert noise[S.DROP_VALUE] == noise["lang_score"] and noise[S.DROP_VALUE] <= 0.6
    assert noise[S.DROP_OP] == "<=" and noise[S.DROP_THRESHOLD] == 0.6

    kept_out = str(tmp_path / "keep")
    run_stage(
        Filter(FilterConfig(language_id={"enabled": True, "keep": ["fr"]}, rules=[])),
        StageLayout(kept_out),
        [(0, shard)],
    )
    by_id = {r["id"]: r for r in removed_rows(kept_out)}
    en = by_id["en"]  # a confident English document, outside the keep-list
    assert en[S.DROP_REASON] == "lang" and en[S.DROP_RULE] == "lang.not_in_keep_list"
    assert en[S.DROP_OP] is None and en[S.DROP_THRESHOLD] is None and en[S.DROP_VALUE] == en["lang_score"]
    assert en[S.DROP_DETAIL] == f"{shard} row 0: lang.not_in_keep_list"


def test_normalize_reader_and_stage_drops_share_the_schema(tmp_path):
    raw = tmp_path / "raw" / "a.jsonl"
    raw.parent.mkdir()
    raw.write_text('{"id": "ok", "text": "Fine text."}\n{not json\n\n{"id": "blank", "text": "   "}\n')
    out = str(tmp_path / "normalize")
    run_stage(Normalize(), StageLayout(out), [(0, str(raw))], read_options=ReadConfig())
    rows = {r[S.DROP_REASON]: r for r in removed_rows(out)}
    bad, blank = rows["invalid_json"], rows["empty_text"]
    assert (bad[S.DROP_SHARD], bad[S.DROP_ROW], bad[S.DROP_UNIT], bad[S.DROP_RULE]) == (
        str(raw),
        2,
        "line",
        "invalid_json",
    )
    assert bad[S.DROP_DETAIL].startswith(f"{raw} line 2: not valid JSON")  # the reader's detail, unchanged
    assert (blank[S.DROP_ROW], blank[S.DROP_UNIT], blank[S.DROP_RULE]) == (4, "line", "empty_text")  # line 3: blank
    assert blank[S.DROP_VALUE] is None and blank[S.DROP_OP] is None


def test_describe_drops_is_vectorised_and_readable():
    text = S.describe_drops(
        pa.array(["gopher_quality.alpha_words", "c4.curly_bracket"]),
        pa.array([0.421345, None], pa.float64()),
        pa.array(["<", None]),
        pa.array([0.8, None], pa.float64()),
    )
    assert text.to_pylist() == ["gopher_quality.alpha_words: 0.4213 < 0.8", "c4.curly_bracket"]
