"""normalize stage, the shard runner (markers, audit, quarantine) and run ids/config errors, without Ray."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge.config import ConfigError, CurateConfig, NormalizeConfig, load_yaml
from mixforge.runner import ShardJob, run_shard
from mixforge.runs import RunConfigMismatch, RunLayout, compute_run_id, open_run
from mixforge.shards import ReadConfig
from mixforge.stage import ShardContext, Stage, StageResult, split_by_reason
from mixforge.stages.normalize import Normalize
from mixforge.storage import InputShard
from tests.helpers import REPO, docs, write_shard


def normalize_texts(texts, config=NormalizeConfig()):
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    ctx = ShardContext("mem", 0)
    result = Normalize(config).process(table, ctx)
    return result, ctx.counters


def test_normalize_text():
    result, counters = normalize_texts(
        [
            "line one\r\nline two\rline three",
            "Cafe\u0301",  # decomposed -> NFC
            "caf\u00c3\u00a9 cr\u00c3\u00a8me",  # UTF-8 read as Latin-1
            "nul\x00 bell\x07 del\x7f tab\tkept\nnewline kept",
            "\ufeffBOM at start",
            "plain ascii stays as it is",
        ]
    )
    assert result.kept.column("text").to_pylist() == [
        "line one\nline two\nline three",
        "Caf\u00e9",
        "caf\u00e9 cr\u00e8me",
        "nul bell del tab\tkept\nnewline kept",
        "BOM at start",
        "plain ascii stays as it is",
    ]
    assert counters == {
        "docs_newlines_normalized": 1,
        "docs_nfc_changed": 1,
        "docs_mojibake_fixed": 1,
        "docs_control_chars_stripped": 2,
    }


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
    assert (stats["docs_in"], stats["docs_kept"], stats["docs_dropped"]) == (
        7,
        5,
        {"empty_text": 1, "text_not_string": 1},
    )
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


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("normalize:\n  fix_mojibak: true\n", r"normalize\.fix_mojibak: unknown key"),
        ("read:\n  batch_rows: 0\n", r"read\.batch_rows: Input should be greater than or equal to 1"),
        ("normalize:\n  unicode_form: NFD\n", r"normalize\.unicode_form: Input should be 'NFC' or 'NFKC'"),
        ("- a list\n", "expected a mapping"),
        ("read: [unclosed\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_field(tmp_path, yaml_text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as err:
        load_yaml(path)
    assert str(path) in str(err.value)


def test_shipped_configs_validate():
    import glob

    from mixforge.export.build import ExportConfig
    from mixforge.optimize.search import load_search_spec

    paths = glob.glob(str(REPO / "configs" / "*.yaml"))
    assert paths, "configs/ should ship example configs"
    for path in paths:
        name = os.path.basename(path)
        if name.startswith(("mixture", "rephrase")):
            continue  # mixture specs: test_mixtures.py; rephrase configs: test_rephrase_flow.py
        if name.startswith("export"):
            load_yaml(path, ExportConfig)
        elif name.startswith("optimize"):
            assert load_search_spec(path).group_names() == ["web", "books", "code"]
        else:
            load_yaml(path)


def test_every_drop_names_shard_and_line(tmp_path):
    src = write_shard(
        str(tmp_path / "in" / "a.jsonl"), [{"text": "x"}, b"{bad", {"text": "  "}, {"text": "y"}, {"text": "\x00"}]
    )
    layout = RunLayout(str(tmp_path / "store"), "r1").stage("normalize")
    run_shard(Normalize(), ShardJob(0, src, layout))
    removed = pq.read_table(layout.removed(0)).to_pylist()
    details = {r[S.DROP_REASON] + ":" + r[S.DROP_DETAIL].split(":")[0] for r in removed}
    assert details == {f"invalid_json:{src} line 2", f"empty_text:{src} line 3", f"empty_text:{src} line 5"}
    assert all(
        r[S.DROP_DETAIL].endswith("empty or whitespace-only after normalisation")
        for r in removed
        if r[S.DROP_REASON] == "empty_text"
    )


class DropOdd(Stage):
    """Drops odd-numbered rows without a detail, either through split_by_reason or by hand."""

    name = "drop-odd"

    def __init__(self, by_hand: bool) -> None:
        self.by_hand = by_hand

    def process(self, batch, ctx):
        odd = pa.array([(ctx.row_offset + i) % 2 == 1 for i in range(batch.num_rows)])
        if self.by_hand:  # a stage that names no rows: the runner finds them by id
            removed = batch.filter(odd).append_column(
                S.DROP_REASON, pa.array(["odd"] * pc.sum(odd).as_py(), pa.string())
            )
            return StageResult(batch.filter(pc.invert(odd)), removed)
        return split_by_reason(batch, pc.if_else(odd, "odd", pa.scalar(None, pa.string())))


@pytest.mark.parametrize("by_hand", [False, True])
def test_the_runner_names_shard_and_row_of_drops_without_detail(tmp_path, by_hand):
    src = write_shard(str(tmp_path / "in" / "a.parquet"), docs(9))
    layout = RunLayout(str(tmp_path / "store"), "r1").stage("drop-odd")
    stats = run_shard(DropOdd(by_hand), ShardJob(0, src, layout), ReadConfig(batch_rows=4))
    assert stats["docs_dropped"] == {"odd": 4}
    removed = pq.read_table(layout.removed(0))
    assert removed.column("id").to_pylist() == ["d-1", "d-3", "d-5", "d-7"]
    assert removed.column(S.DROP_DETAIL).to_pylist() == [f"{src} row {n}: odd" for n in (1, 3, 5, 7)]
    assert removed.column("drop_row").to_pylist() == [1, 3, 5, 7]
    assert set(removed.column("drop_shard").to_pylist()) == {src}


def test_quarantine_ledger_in_marker_stats_and_summary(tmp_path):
    import zstandard

    from mixforge.runner import summarize_stage

    layout = RunLayout(str(tmp_path / "store"), "r1").stage("normalize")
    good = write_shard(str(tmp_path / "in" / "good.jsonl"), docs(4))
    packed = zstandard.ZstdCompressor().compress(b"".join(json.dumps(d).encode() + b"\n" for d in docs(500)))
    cut = tmp_path / "in" / "cut.jsonl.zst"
    cut.write_bytes(packed[: len(packed) // 2])
    table_path = write_shard(str(tmp_path / "in" / "bad.parquet"), docs(30))
    pf = pq.ParquetFile(table_path)
    pq.write_table(pf.read(), table_path, row_group_size=10, write_page_checksum=True)
    data = bytearray(open(table_path, "rb").read())
    data[pq.ParquetFile(table_path).metadata.row_group(1).column(1).dictionary_page_offset + 64] ^= 0xFF
    open(table_path, "wb").write(bytes(data))

    results = [run_shard(Normalize(), ShardJob(i, uri, layout)) for i, uri in enumerate([good, str(cut), table_path])]
    assert [r["quarantined"] for r in results] == [False, True, True]
    marker = json.load(open(layout.quarantine(1)))
    assert marker["shard"] == str(cut) and "truncated" in marker["error"] and marker["rows_declared"] is None
    assert 0 <= marker["rows_decoded"] < 500
    assert (results[2]["rows_decoded"], results[2]["rows_declared"]) == (10, 30)
    assert not os.path.exists(layout.part(1)) and not os.path.exists(layout.part(2))  # no row goes downstream

    summary = summarize_stage("normalize", layout.dir, results, 1.0)
    assert summary["docs_in"] == 4 and summary["docs_quarantined"] is None  # the JSONL shard declares nothing
    assert summary["docs_quarantined_decoded"] == marker["rows_decoded"] + 10
    assert summary["quarantined"][1] == {
        "shard": table_path,
        "error": results[2]["error"],
        "rows_decoded": 10,
        "rows_declared": 30,
    }
    only_parquet = summarize_stage("normalize", layout.dir, [results[0], results[2]], 1.0)
    assert only_parquet["docs_quarantined"] == 30 and only_parquet["docs_quarantined_decoded"] == 10
    assert summarize_stage("normalize", layout.dir, results[:1], 1.0)["docs_quarantined"] == 0
