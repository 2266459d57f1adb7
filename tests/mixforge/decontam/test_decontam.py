"""The decontaminate stage with real parts: benchmark files on disk, the index built by its steps and
stored, the stage run by the shard runner (SerialExecutor), every mode, counts reconciled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge import storage
from mixforge.config import CurateConfig
from mixforge.decontam.composite import decontaminate, markdown_report
from mixforge.decontam.config import DecontamConfig
from mixforge.decontam.index import MANIFEST, plan_index
from mixforge.decontam.ngrams import normalized_words, word_spans
from mixforge.decontam.stage import merge_spans, split_text
from mixforge.executor import LocalPoolExecutor, SerialExecutor
from mixforge.runs import RunLayout, StageLayout
from mixforge.stages.registry import get_stage, stage_names
from tests.helpers import jsonl_bytes, prose

QUESTION = (
    "In the year of the great harbour fire, which of the three lighthouse keepers on the northern island "
    "first noticed the smoke rising above the old customs house near the fish market?"
)
# one word changed near the start: the 13-word windows after it are untouched
EDITED = QUESTION.replace("great harbour fire", "great harbor fire")
ANSWER = "The youngest keeper, who had been watching the tide from the lamp room since dawn"
BOILERPLATE = "which of the following statements about the passage above is most likely to be true"


def _items() -> list[dict]:
    items = [{"question": QUESTION, "choices": ["the first", "the second", "the third"], "answer": ANSWER}]
    # twelve items share the boilerplate: over max_benchmark_items (10), it is left out of the index
    items += [{"question": f"{BOILERPLATE} {prose(900 + i, 1)}", "choices": [], "answer": str(i)} for i in range(12)]
    return items


def _corpus() -> list[dict]:
    text = [
        ("exact", f"{prose(1, 4)} {QUESTION} {prose(2, 4)}"),
        ("edited", f"{prose(3, 4)}\n\n{EDITED}\n\n{prose(4, 4)}"),
        ("answer-only", f"Notes. {ANSWER}. The end."),
        ("boilerplate", f"{prose(6, 3)} {BOILERPLATE}, said nobody. {prose(7, 3)}"),
    ]
    text += [(f"clean-{i}", prose(100 + i, 8)) for i in range(6)]
    return [
        {"id": doc_id, "text": t, "source": "web" if i % 2 else "books", "url": None, "meta": None}
        for i, (doc_id, t) in enumerate(text)
    ]


CONTAMINATED = {"exact", "edited", "answer-only"}


@pytest.fixture
def setup(tmp_path):
    bench = tmp_path / "evals" / "quiz.jsonl"
    bench.parent.mkdir()
    bench.write_bytes(jsonl_bytes(_items()))
    other = tmp_path / "evals" / "other.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": prose(500, 3)}]), other)
    rows = _corpus()
    shards = []
    for i, part in enumerate((rows[:5], rows[5:])):
        path = str(tmp_path / "in" / f"part-{i:05d}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part, schema=S.CORE_SCHEMA), path)
        shards.append((i, path))
    return tmp_path, str(bench), str(other), shards


def _config(bench: str, other: str, **kw) -> DecontamConfig:
    return DecontamConfig(
        benchmarks=[
            {"name": "quiz", "uri": bench, "fields": ["question", "choices", "answer"]},
            {"name": "other", "uri": other},
        ],
        **kw,
    )


def _read(folder: str) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".parquet")
    )


def test_drop_removes_exact_and_edited_questions_and_reports_them(setup):
    tmp, bench, other, shards = setup
    layout = StageLayout(str(tmp / "store" / "runs" / "r1" / "decontaminate"))
    summary = decontaminate(str(tmp / "store"), layout, shards, _config(bench, other), SerialExecutor())

    kept = set(_read(layout.dir).column(S.ID).to_pylist())
    removed = _read(os.path.join(layout.dir, "_removed"))
    assert set(removed.column(S.ID).to_pylist()) == CONTAMINATED
    assert kept == {d["id"] for d in _corpus()} - CONTAMINATED  # the boilerplate document stays
    assert set(removed.column(S.DROP_REASON).to_pylist()) == {"decontaminate.quiz"}
    detail = dict(zip(removed.column(S.ID).to_pylist(), removed.column(S.DROP_DETAIL).to_pylist()))
    assert "matches quiz" in detail["edited"] and "part-00000.parquet row 1" in detail["edited"]
    # counts reconcile, and the report has per-benchmark and per-source figures with examples
    assert summary["docs_in"] == 10 == summary["docs_kept"] + sum(summary["docs_dropped"].values())
    report = summary["decontaminate"]
    assert report["docs_contaminated"] == 3 and report["by_benchmark"]["quiz"]["docs"] == 3
    assert report["by_benchmark"]["other"]["docs"] == 0
    assert sum(v["docs_contaminated"] for v in report["by_source"].values()) == 3
    assert report["tokens_contaminated"] == report["by_benchmark"]["quiz"]["tokens"] > 0
    examples = report["by_benchmark"]["quiz"]["examples"]
    assert {e["id"] for e in examples} == CONTAMINATED and all(len(e["ngram"].split()) == 13 for e in examples)
    assert report["index"]["frequent_dropped"] > 0 and report["index"]["reused"] is False
    assert "figures" not in summary
    assert storage.read_json(layout.stats)["decontaminate"]["docs_contaminated"] == 3
    text = open(report["markdown"]).read()
    assert (
        "| quiz | 3 |" in text
        and "edited" in text
        and text == markdown_report({k: v for k, v in report.items() if k != "markdown"})
    )


def test_annotate_adds_the_columns_and_keeps_every_document(setup):
    tmp, bench, other, shards = setup
    layout = StageLayout(str(tmp / "store" / "runs" / "r2" / "decontaminate"))
    summary = decontaminate(
        str(tmp / "store"), layout, shards, _config(bench, other, mode="annotate"), SerialExecutor()
    )
    out = _read(layout.dir).to_pylist()
    assert summary["docs_kept"] == summary["docs_in"] == 10 and not summary["docs_dropped"]
    by_id = {r["id"]: r for r in out}
    assert {i for i, r in by_id.items() if r["contaminated"]} == CONTAMINATED
    assert by_id["exact"]["contamination_benchmarks"] == ["quiz"] and by_id["exact"]["contamination_ngrams"] >= 10
    assert by_id["clean-0"]["contamination_benchmarks"] == [] and by_id["clean-0"]["contamination_ngrams"] == 0
    assert by_id["boilerplate"]["contaminated"] is False  # the frequent n-grams are not in the index


def test_cut_splits_contaminated_documents_into_pieces_with_parent_ids(setup):
    tmp, bench, other, shards = setup
    layout = StageLayout(str(tmp / "store" / "runs" / "r3" / "decontaminate"))
    cfg = _config(bench, other, mode="cut", cut={"margin_chars": 20, "min_piece_chars": 100})
    summary = decontaminate(str(tmp / "store"), layout, shards, cfg, SerialExecutor())
    out = {r["id"]: r for r in _read(layout.dir).to_pylist()}
    removed = _read(os.path.join(layout.dir, "_removed"))
    reasons = dict(zip(removed.column(S.ID).to_pylist(), removed.column(S.DROP_REASON).to_pylist()))
    # the two documents with prose around the question keep pieces; the short answer-only one keeps none
    assert reasons == {
        "exact": "decontaminate.cut",
        "edited": "decontaminate.cut",
        "answer-only": "decontaminate.no_piece_left",
    }
    pieces = {i: r for i, r in out.items() if r["parent_id"] is not None}
    assert set(pieces) == {"exact#cut0", "exact#cut1", "edited#cut0", "edited#cut1"}
    corpus = {d["id"]: d["text"] for d in _corpus()}
    for piece_id, row in pieces.items():
        parent = piece_id.split("#")[0]
        assert row["parent_id"] == parent and row["text"] in corpus[parent] and len(row["text"]) >= 100
        assert "lighthouse keepers" not in row["text"]  # the matching spans are gone
    # with a 20-character margin, the words before the first matching n-gram (the edit is there) stay
    assert out["edited#cut0"]["text"].startswith(prose(3, 4)) and out["edited#cut0"]["text"].endswith("In the year")
    # generating-stage accounting: every input is used (clean, passed through) or dropped
    assert summary["docs_used"] == 7 and sum(summary["docs_dropped"].values()) == 3
    assert summary["docs_in"] == summary["docs_used"] + sum(summary["docs_dropped"].values())
    assert summary["docs_kept"] == 7 + 4 == len(out)
    assert summary["decontaminate"]["cut"]["pieces"] == 4

    # a document split more than max_splits times is dropped whole
    layout = StageLayout(str(tmp / "store" / "runs" / "r4" / "decontaminate"))
    cfg = _config(bench, other, mode="cut", cut={"margin_chars": 0, "min_piece_chars": 1, "max_splits": 0})
    summary = decontaminate(str(tmp / "store"), layout, shards, cfg, SerialExecutor())
    assert summary["docs_dropped"] == {"decontaminate.too_many_splits": 3}


def test_the_index_is_stored_once_and_reused(setup):
    tmp, bench, other, shards = setup
    store = str(tmp / "store")
    cfg = _config(bench, other)
    first = decontaminate(store, StageLayout(f"{store}/runs/a/decontaminate"), shards, cfg, SerialExecutor())
    plan = plan_index(cfg, store)
    assert plan.uri.startswith(f"{store}/index/decontam/") and plan.uri.endswith(plan.key)
    stamp = {f: os.stat(os.path.join(plan.uri, f)).st_mtime_ns for f in os.listdir(plan.uri)}
    assert MANIFEST in stamp and "_build" not in stamp  # published, work files removed
    second = decontaminate(store, StageLayout(f"{store}/runs/b/decontaminate"), shards, cfg, SerialExecutor())
    assert first["decontaminate"]["index"]["reused"] is False and second["decontaminate"]["index"]["reused"] is True
    assert {f: os.stat(os.path.join(plan.uri, f)).st_mtime_ns for f in os.listdir(plan.uri)} == stamp  # untouched
    assert second["docs_dropped"] == first["docs_dropped"]
    # a changed benchmark file is another index; settings that change matches too
    with open(bench, "ab") as f:
        f.write(jsonl_bytes([{"question": "one more", "choices": [], "answer": "x"}]))
    assert plan_index(cfg, store).key != plan.key
    assert plan_index(_config(bench, other, ngram=8), store).key != plan_index(cfg, store).key


def test_index_built_by_worker_processes_matches_the_serial_one(setup):
    tmp, bench, other, shards = setup
    cfg = _config(bench, other, index_partitions=3)
    a = decontaminate(f"{tmp}/s1", StageLayout(f"{tmp}/s1/d"), shards, cfg, SerialExecutor())
    b = decontaminate(f"{tmp}/s2", StageLayout(f"{tmp}/s2/d"), shards, cfg, LocalPoolExecutor(2))
    assert a["decontaminate"]["index"]["ngrams"] == b["decontaminate"]["index"]["ngrams"] > 0
    assert a["docs_dropped"] == b["docs_dropped"] == {"decontaminate.quiz": 3}


def test_frequent_and_stop_listed_ngrams_are_ignored(setup):
    tmp, bench, other, shards = setup
    # with no frequency rule the boilerplate matches
    cfg = _config(bench, other, mode="annotate", max_benchmark_items=None)
    summary = decontaminate(f"{tmp}/s", StageLayout(f"{tmp}/s/a"), shards, cfg, SerialExecutor())
    assert summary["decontaminate"]["docs_contaminated"] == 4
    # a stop list removes the question's first n-gram only: the rest of it still matches
    first13 = " ".join(normalized_words(QUESTION)[:13])
    cfg = _config(bench, other, mode="annotate", stop_ngrams=[first13])
    summary = decontaminate(f"{tmp}/s", StageLayout(f"{tmp}/s/b"), shards, cfg, SerialExecutor())
    assert summary["decontaminate"]["index"]["stop_dropped"] == 1
    assert summary["decontaminate"]["docs_contaminated"] == 3
    with pytest.raises(ValueError, match="13 words"):
        _config(bench, other, stop_ngrams=["too short"])


def test_registered_after_dedup_and_run_through_the_registry(setup):
    tmp, bench, other, shards = setup
    names = stage_names()
    assert names.index("dedup") < names.index("decontaminate") < names.index("rephrase")
    config = CurateConfig.model_validate(
        {
            "stages": ["normalize", "dedup", "decontaminate"],
            "extra_stages": {
                "decontaminate": {"benchmarks": [{"name": "quiz", "uri": bench, "fields": ["question"]}]}
            },
        }
    )
    assert config.run_fingerprint()["extra_stages"]["decontaminate"]["ngram"] == 13
    stage = get_stage("decontaminate")
    assert stage.config_model is DecontamConfig and not stage.generates  # its output is the run's output
    summary = stage.run(RunLayout(str(tmp / "store"), "run-x"), shards, config, SerialExecutor())
    assert summary["name"] == "decontaminate" and summary["docs_dropped"] == {"decontaminate.quiz": 2}
    with pytest.raises(ValueError, match="benchmarks"):
        CurateConfig.model_validate({"stages": ["normalize", "decontaminate"]})


def test_span_tokeniser_agrees_with_the_vectorised_normalisation():
    text = "Ｔｈｅ ﬁnal—answer: café, naïve x² ½ don’t e\u0301te İstanbul हिन्दी भाषा 3.14!"
    words, spans = word_spans(text)
    assert words == normalized_words(text)
    assert word_spans(text, numbers=False)[0] == normalized_words(text, numbers=False)
    # numbers become 0 (as datatrove's), decimal parts included; or are kept as they are
    assert normalized_words("Copyright 2009-2011, pi = 3.14") == ["copyright", "0", "0", "pi", "0"]
    assert normalized_words("Copyright 2009-2011, pi = 3.14", numbers=False) == [
        "copyright",
        "2009",
        "2011",
        "pi",
        "3",
        "14",
    ]
    assert [text[a:b] for a, b in spans][:3] == ["Ｔｈｅ", "ﬁnal", "answer"]
    assert merge_spans([(50, 60), (10, 20), (25, 30)], 5, 58) == [(5, 35), (45, 58)]
    assert split_text("abc  def ghi", [(3, 5), (8, 9)]) == ["abc", "def", "ghi"]


def test_curate_runs_it_after_dedup_from_the_command_line(setup, tmp_path):
    """`mixforge curate` with decontaminate listed: raw JSONL in, the stage's folder is the run's output."""
    _, bench, _, _ = setup
    raw = tmp_path / "raw" / "part-0.jsonl"
    raw.parent.mkdir()
    rows = [{k: v for k, v in d.items() if k in ("id", "text", "source")} for d in _corpus()]
    raw.write_bytes(jsonl_bytes(rows + [rows[0]]))  # a repeated document: dedup's
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "stages: [normalize, dedup, decontaminate]\n"
        "extra_stages:\n  decontaminate:\n    mode: drop\n"
        f"    benchmarks:\n      - {{name: quiz, uri: '{bench}', fields: [question, choices, answer]}}\n"
    )
    store = tmp_path / "store"
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_AUTH_MODE": "disabled"}
    args = ["curate", "--input", str(raw), "--output", str(store), "--config", str(cfg), "--json", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "mixforge.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert [s["name"] for s in summary["stages"]] == ["normalize", "dedup", "decontaminate"]
    stage = summary["stages"][-1]
    assert summary["output"] == stage["output"] and stage["output"].endswith("/decontaminate")
    assert stage["docs_in"] == 10 and stage["docs_dropped"] == {"decontaminate.quiz": 3}
    assert stage["decontaminate"]["by_benchmark"]["quiz"]["docs"] == 3
