"""normalize stage, the shard runner (markers, audit, quarantine) and run ids/config errors, without Ray."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.config import ConfigError, CurateConfig, NormalizeConfig, load_yaml
from mixforge.runner import ShardJob, run_shard
from mixforge.runs import RunConfigMismatch, RunLayout, compute_run_id, open_run
from mixforge.stage import ShardContext
from mixforge.stages.normalize import Normalize
from mixforge.storage import InputShard
from tests.helpers import docs, write_shard


def normalize_texts(texts, config=NormalizeConfig()):
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    ctx = ShardContext("mem", 0)
    result = Normalize(config).process(table, ctx)
    return result, ctx.counters


def test_normalize_text():
    result, counters = normalize_texts([
        "line one\r\nline two\rline three",
        "Cafe\u0301",                              # decomposed -> NFC
        "caf\u00c3\u00a9 cr\u00c3\u00a8me",         # UTF-8 read as Latin-1
        "nul\x00 bell\x07 del\x7f tab\tkept\nnewline kept",
        "\ufeffBOM at start",
        "plain ascii stays as it is",
    ])
    assert result.kept.column("text").to_pylist() == [
        "line one\nline two\nline three",
        "Caf\u00e9",
        "caf\u00e9 cr\u00e8me",
        "nul bell del tab\tkept\nnewline kept",
        "BOM at start",
        "plain ascii stays as it is",
    ]
    assert counters == {"docs_newlines_normalized": 1, "docs_nfc_changed": 1, "docs_mojibake_fixed": 1,
                        "docs_control_chars_stripped": 2}


def test_legitimate_latin1_looking_text_is_not_mangled():
    text = "Ã la carte is not mojibake here; neither is 'â' alone, nor Ð or Ñ in Ðuro and Ñandú."
    result, counters = normalize_texts([text])
    assert result.kept.column("text").to_pylist() == [text]
    assert counters["docs_mojibake_fixed"] == 0


def test_empty_after_normalisation_is_dropped_with_reason():
    result, _ = normalize_texts(["", "   \n\t ", "\x00\x01", "x"])
    assert result.kept.column("text").to_pylist() == ["x"]
    assert result.removed.column(S.DROP_REASON).to_pylist() == ["empty_text"] * 3
    result, _ = normalize_texts(["", "x"], NormalizeConfig(drop_empty=False))
    assert result.kept.num_rows == 2 and result.removed is None


def test_run_shard_writes_outputs_markers_and_audit(tmp_path):
    src = write_shard(str(tmp_path / "in" / "a.jsonl"), docs(5) + [{"text": "  "}, {"text": 3}])
    layout = RunLayout(str(tmp_path / "store"), "r1").stage("normalize")
    stats = run_shard(Normalize(), ShardJob(0, src, layout))
    assert (stats["docs_in"], stats["docs_kept"], stats["docs_dropped"]) == (7, 5, {"empty_text": 1, "text_not_string": 1})
    assert stats["docs_in"] == stats["docs_kept"] + sum(stats["docs_dropped"].values())
    assert pq.read_table(layout.part(0)).num_rows == 5
    removed = pq.read_table(layout.removed(0))
    assert sorted(removed.column(S.DROP_REASON).to_pylist()) == ["empty_text", "text_not_string"]
    assert json.load(open(layout.done(0)))["docs_kept"] == 5
    # A second call skips the finished shard and returns its recorded stats.
    again = run_shard(Normalize(), ShardJob(0, src, layout))
    assert again["skipped"] is True and again["docs_kept"] == 5


def test_unreadable_shard_is_quarantined_then_retried_on_rerun(tmp_path):
    src = tmp_path / "in" / "bad.jsonl.gz"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    layout = RunLayout(str(tmp_path / "store"), "r1").stage("normalize")
    stats = run_shard(Normalize(), ShardJob(0, str(src), layout))
    assert stats["quarantined"] is True and "bad.jsonl.gz" in stats["error"]
    record = json.load(open(layout.quarantine(0)))
    assert record["shard"] == str(src)
    assert not (tmp_path / "store" / "runs" / "r1" / "normalize" / "part-00000.parquet").exists()
    write_shard(str(src), docs(2))  # the shard gets fixed; a rerun picks it up
    stats = run_shard(Normalize(), ShardJob(0, str(src), layout))
    assert stats["docs_kept"] == 2
    assert not (tmp_path / "store" / "runs" / "r1" / "normalize" / "_quarantine" / "part-00000.json").exists()


def test_run_ids_are_deterministic_and_refuse_config_changes(tmp_path):
    inputs = [InputShard("s3://b/a.jsonl", 10), InputShard("s3://b/b.jsonl", 20)]
    cfg = CurateConfig().run_fingerprint()
    assert compute_run_id(inputs, cfg) == compute_run_id(list(inputs), dict(cfg))
    assert compute_run_id(inputs, cfg) != compute_run_id(inputs[:1], cfg)
    other = CurateConfig(normalize=NormalizeConfig(fix_mojibake=False)).run_fingerprint()
    assert compute_run_id(inputs, cfg) != compute_run_id(inputs, other)
    # Where and how it runs is not part of the identity of the data.
    assert CurateConfig(ray={"num_cpus": 1}).run_fingerprint() == cfg

    root = str(tmp_path / "store")
    run, resumed = open_run(root, inputs, cfg, "my-run")
    assert (run.run_id, resumed) == ("my-run", False)
    assert open_run(root, inputs, cfg, "my-run")[1] is True
    with pytest.raises(RunConfigMismatch, match=r"normalize\.fix_mojibake"):
        open_run(root, inputs, other, "my-run")
    with pytest.raises(RunConfigMismatch, match="inputs differ"):
        open_run(root, inputs[:1], cfg, "my-run")


@pytest.mark.parametrize("yaml_text,message", [
    ("normalize:\n  fix_mojibak: true\n", r"normalize\.fix_mojibak: unknown key"),
    ("read:\n  batch_rows: 0\n", r"read\.batch_rows: Input should be greater than or equal to 1"),
    ("normalize:\n  unicode_form: NFD\n", r"normalize\.unicode_form: Input should be 'NFC' or 'NFKC'"),
    ("- a list\n", "expected a mapping"),
    ("read: [unclosed\n", "not valid YAML"),
])
def test_config_errors_name_the_field(tmp_path, yaml_text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as err:
        load_yaml(path)
    assert str(path) in str(err.value)


def test_shipped_configs_validate():
    import glob

    paths = glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.yaml"))
    assert paths, "configs/ should ship example configs"
    for path in paths:
        name = os.path.basename(path)
        if name.startswith(("mixture", "rephrase")):
            continue  # mixture specs: test_mixtures.py; rephrase configs: test_rephrase_flow.py
        load_yaml(path)
