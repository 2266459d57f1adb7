"""The `pii` stage (issue #19): precision and recall on the frozen labelled set, hard negatives left alone, each
mode (annotate, redact, drop), offsets in non-ASCII text, a redacted shard reconciling its counts through the
registered stage, the registry and config, and the Presidio backend (missing: a clear error; present: a small
local spaCy pipeline)."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge.config import CurateConfig, load_model
from mixforge.config_errors import ConfigError
from mixforge.executor import SerialExecutor
from mixforge.pii.config import PIIConfig, PresidioConfig
from mixforge.pii.detect import ENTITIES, candidates, detect
from mixforge.pii.presidio import PresidioMissing
from mixforge.pii.stage import SPANS, PIIStage
from mixforge.runs import RunLayout
from mixforge.stage import ShardContext
from mixforge.stages.registry import get_stage, stage_names
from tests.helpers import write_shard

EVAL = Path(__file__).with_name("pii_eval.jsonl")
ASSERTED = ("email", "ip_address", "credit_card")  # the goal: >= 0.95 each


def load_eval() -> list[dict]:
    return [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]


def scores(rows: list[dict], found: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """Exact-span precision and recall per entity."""
    predicted = defaultdict(set)
    for doc, entity, start, end in found.select("doc", "entity", "start", "end").iter_rows():
        predicted[entity].add((doc, start, end))
    out = {}
    for entity in ENTITIES:
        gold = {(i, e["start"], e["end"]) for i, r in enumerate(rows) for e in r["entities"] if e["type"] == entity}
        hit = len(gold & predicted[entity])
        out[entity] = (hit / max(1, len(predicted[entity])), hit / len(gold))
    return out


def test_precision_and_recall_on_the_frozen_set():
    rows = load_eval()
    assert len(rows) == 600 and all(sum(e["type"] == t for r in rows for e in r["entities"]) > 80 for t in ENTITIES)
    got = scores(rows, detect(pl.Series([r["text"] for r in rows])))
    for entity in ASSERTED:
        precision, recall = got[entity]
        assert precision >= 0.95 and recall >= 0.95, (entity, got[entity])
    for entity in ("phone", "iban"):  # not a goal of the issue, but no worse than this
        assert min(got[entity]) >= 0.9, (entity, got[entity])


def test_hard_negatives_are_not_matched():
    rows = load_eval()
    found = detect(pl.Series([r["text"] for r in rows]))
    spans = defaultdict(list)
    for doc, entity, start, end in found.select("doc", "entity", "start", "end").iter_rows():
        spans[doc].append((entity, start, end))
    hits = [
        (n["kind"], n["value"], entity)
        for i, r in enumerate(rows)
        for n in r["negatives"]
        for entity, start, end in spans[i]
        if start < n["end"] and n["start"] < end
    ]
    assert hits == []
    kinds = {n["kind"] for r in rows for n in r["negatives"]}
    assert {"version", "date", "order_number", "isbn", "luhn_invalid", "long_digits", "private_ip"} <= kinds


def test_private_addresses_only_when_asked():
    text = ["gateway 192.168.1.1, loopback 127.0.0.1, link-local fe80::1:2, public 8.8.4.4 and 2a00:1450:4001::200e"]
    public = detect(pl.Series(text), ["ip_address"])["value"].to_list()
    assert public == ["8.8.4.4", "2a00:1450:4001::200e"]
    every = detect(pl.Series(text), ["ip_address"], public_ips_only=False)["value"].to_list()
    assert every == ["192.168.1.1", "127.0.0.1", "fe80::1:2", "8.8.4.4", "2a00:1450:4001::200e"]


def test_offsets_are_characters_in_any_text():
    texts = ["Ünïcödé → 漢字 mail anna@example.org, then \ufdd0 bob@example.com", "", "nothing here", "x@y.de"]
    found = candidates(pl.Series(texts), r"[a-z]+@[a-z]+\.[a-z]+")
    for doc, start, end, match in found.iter_rows():
        assert texts[doc][start:end] == match
    assert found["match"].to_list() == ["anna@example.org", "bob@example.com", "x@y.de"]


def batch(texts: list[str], sources: list[str] | None = None) -> pa.Table:
    return pa.table(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "source": sources or ["web"] * len(texts),
        }
    )


TEXTS = [
    "Mail anna.smith@gmail.com or call +44 20 7946 0958 today.",
    "Card 4111 1111 1111 1111 and server 8.8.8.8 were logged.",
    "Pay to DE89 3704 0044 0532 0130 00 please.",
    "Version 4.4.7.1 was released on 2023-01-15, order #12345-67890.",
]


def test_redact_mode_replaces_with_typed_placeholders():
    result = PIIStage(PIIConfig()).process(batch(TEXTS), ShardContext("mem://s", 0))
    assert result.removed is None
    assert result.kept.column("text").to_pylist() == [
        "Mail <EMAIL> or call <PHONE> today.",
        "Card <CREDIT_CARD> and server <IP_ADDRESS> were logged.",
        "Pay to <IBAN> please.",
        TEXTS[3],
    ]
    assert result.kept.column("pii_email").to_pylist() == [1, 0, 0, 0]
    assert result.kept.column("pii_credit_card").to_pylist() == [0, 1, 0, 0]
    assert result.kept.column(SPANS).to_pylist() == [[], [], [], []]


def test_annotate_mode_spans_point_into_the_written_text():
    config = PIIConfig(email="annotate", phone="annotate", ip_address="annotate", credit_card="redact")
    result = PIIStage(config).process(batch(TEXTS), ShardContext("mem://s", 0))
    kept = result.kept.to_pylist()
    assert kept[0]["text"] == TEXTS[0]  # nothing redacted there
    assert [(s["entity"], kept[0]["text"][s["start"] : s["end"]]) for s in kept[0][SPANS]] == [
        ("email", "anna.smith@gmail.com"),
        ("phone", "+44 20 7946 0958"),
    ]
    # the card before it was redacted: the IP's span is in the edited text
    assert kept[1]["text"] == "Card <CREDIT_CARD> and server 8.8.8.8 were logged."
    (span,) = kept[1][SPANS]
    assert kept[1]["text"][span["start"] : span["end"]] == "8.8.8.8"
    assert kept[1]["pii_ip_address"] == 1 and kept[3]["pii_phone"] == 0


def test_drop_mode_removes_the_document_with_its_reason():
    config = PIIConfig(email="drop", credit_card="drop", iban="off")
    stage = PIIStage(config)
    result = stage.process(batch(TEXTS), ShardContext("mem://s", 0))
    assert result.kept.column("id").to_pylist() == ["d2", "d3"]
    assert result.kept.column("text").to_pylist()[0] == TEXTS[2]  # iban off: left as it is
    assert "pii_iban" not in result.kept.column_names
    assert result.removed.column("drop_reason").to_pylist() == ["pii.email", "pii.credit_card"]
    assert result.removed.column("text").to_pylist() == TEXTS[:2]  # the audit keeps the original
    assert result.removed_rows.to_pylist() == [0, 1]
    assert stage.drop_order() == ["pii.email", "pii.credit_card"]


def test_a_redacted_shard_reconciles_its_counts(tmp_path):
    rows = load_eval()[:200]
    shard = write_shard(
        str(tmp_path / "in" / "part-0.parquet"),
        [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in rows],
    )
    config = CurateConfig(stages=("dedup", "pii"), extra_stages={"pii": {"phone": "drop", "iban": "annotate"}})
    run = RunLayout(str(tmp_path / "store"), "r1")
    summary = get_stage("pii").run(run, [(0, shard)], config, SerialExecutor())
    stats = json.loads(Path(run.stage("pii").stats).read_text())
    assert stats["pii"] == summary["pii"]
    report = stats["pii"]["entities"]
    gold = defaultdict(int)
    gold_docs = defaultdict(set)
    for r in rows:
        for e in r["entities"]:
            gold[e["type"]] += 1
            gold_docs[e["type"]].add(r["id"])
    assert {e: report[e]["found"] for e in ENTITIES} == dict(gold)
    assert report["phone"]["documents"] == len(gold_docs["phone"]) == stats["docs_dropped"]["pii.phone"]
    assert stats["docs_in"] == 200 == stats["docs_kept"] + sum(stats["docs_dropped"].values())
    kept = pq.read_table(run.stage("pii").part(0)).to_pylist()
    removed = pq.read_table(run.stage("pii").removed(0)).to_pylist()
    assert len(kept) == stats["docs_kept"] and len(removed) == stats["docs_dropped"]["pii.phone"]
    for entity, placeholder in (
        ("email", "<EMAIL>"),
        ("ip_address", "<IP_ADDRESS>"),
        ("credit_card", "<CREDIT_CARD>"),
    ):
        in_text = sum(r["text"].count(placeholder) for r in kept)
        assert in_text == sum(r[f"pii_{entity}"] for r in kept)
        assert in_text + sum(r[f"pii_{entity}"] for r in removed) == report[entity]["found"]
    assert sum(len(r[SPANS]) for r in kept) == sum(r["pii_iban"] for r in kept)
    per_source = stats["pii"]["by_source"]
    assert sum(s["email"]["found"] for s in per_source.values()) == report["email"]["found"]
    assert set(per_source) == {r["source"] for r in rows if r["entities"]}
    assert stats["counters"]["pii.email"] == report["email"]["found"]


def test_registered_after_dedup_with_its_settings_checked(tmp_path):
    order = stage_names()
    assert order.index("dedup") < order.index("pii") < order.index("rephrase")
    config = load_model(
        CurateConfig, {"stages": ["dedup", "pii"], "extra_stages": {"pii": {"email": "drop"}}}, "c.yaml"
    )
    assert config.run_fingerprint()["extra_stages"] == {"pii": {"email": "drop"}}
    with pytest.raises(ConfigError, match=r"extra_stages\.pii: email"):
        load_model(CurateConfig, {"stages": ["pii"], "extra_stages": {"pii": {"email": "hide"}}}, "c.yaml")


def test_presidio_missing_is_a_clear_error():
    try:
        import presidio_analyzer  # noqa: F401

        pytest.skip("presidio-analyzer is installed here")
    except ImportError:
        pass
    stage = PIIStage(PIIConfig(ner=PresidioConfig()))
    with pytest.raises(PresidioMissing, match="pip install presidio-analyzer"):
        stage.setup()


@pytest.mark.skipif(
    not os.environ.get("MIXFORGE_PRESIDIO_SITE"),
    reason="MIXFORGE_PRESIDIO_SITE: the site-packages of a throwaway venv with presidio-analyzer (not in the lock)",
)
def test_presidio_backend_with_a_local_spacy_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [*sys.path, os.environ["MIXFORGE_PRESIDIO_SITE"]])
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": [{"LOWER": "elizabeth"}, {"LOWER": "bennet"}]},
            {"label": "GPE", "pattern": "Meryton"},
        ]
    )
    nlp.to_disk(tmp_path / "pipeline")
    ner = PresidioConfig(spacy_model=str(tmp_path / "pipeline"), score_threshold=0.3)
    stage = PIIStage(PIIConfig(ner=ner))
    text = "Elizabeth Bennet walked to Meryton and wrote to lizzy@longbourn.co.uk about it."
    result = stage.process(batch([text, "No one here."]), ShardContext("mem://s", 0))
    assert result.kept.column("text").to_pylist() == [
        "<PERSON> walked to <LOCATION> and wrote to <EMAIL> about it.",
        "No one here.",
    ]
    assert result.kept.column("pii_person").to_pylist() == [1, 0]
    assert result.kept.column("pii_location").to_pylist() == [1, 0]
    with pytest.raises(PresidioMissing, match="not installed"):
        PIIStage(PIIConfig(ner=PresidioConfig(spacy_model="no_such_pipeline_xx"))).setup()


def test_lookalikes_from_real_text_are_left_alone():
    """Shapes seen in the dev corpus: numbered sections, decimal fractions, Perl names; the real ones next to them
    are still found."""
    texts = [
        "12.6.2.1. Compiling\n6.2.4.3. Basic MTA operation",
        "1.2511263318488451 │ 7.415540334817821",
        "B::Lint(3perl) checks code; ping 130.89.148.77. Done.",
    ]
    found = detect(pl.Series(texts))
    assert found.select("doc", "entity", "value").rows() == [(2, "ip_address", "130.89.148.77")]
