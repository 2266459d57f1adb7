"""The decontaminate stage's pre-flight: benchmark files that are missing, unreadable or lack the configured
fields fail the command before Prefect, Ray or any stage starts (exit 2, nothing written), naming the
benchmark, the file and the field."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import cli
from mixforge.config_errors import ConfigError
from mixforge.decontam.config import DecontamConfig
from mixforge.decontam.index import check_benchmarks
from tests.helpers import jsonl_bytes, prose


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "raw" / "part-0.jsonl"
    path.parent.mkdir()
    path.write_bytes(jsonl_bytes([{"id": f"d{i}", "text": prose(i, 3), "source": "web"} for i in range(3)]))
    return str(path)


def _curate(tmp_path, raw: str, benchmarks: str, capsys) -> tuple[int, str, str]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"stages: [normalize, dedup, decontaminate]\nextra_stages:\n  decontaminate:\n    benchmarks:\n{benchmarks}"
    )
    store = tmp_path / "store"
    code = cli.main(["curate", "--input", raw, "--output", str(store), "--config", str(cfg), "-q"])
    assert not store.exists()  # refused before any stage (or the run's manifest) wrote anything
    return code, capsys.readouterr().err, str(store)


def test_a_missing_benchmark_file_fails_before_any_stage(tmp_path, raw, capsys):
    good = tmp_path / "evals" / "quiz.jsonl"
    good.parent.mkdir()
    good.write_bytes(jsonl_bytes([{"question": "q", "answer": "a"}]))
    missing = tmp_path / "evals" / "gsm8k.jsonl.zst"
    code, err, _ = _curate(
        tmp_path,
        raw,
        f"      - {{name: quiz, uri: '{good}', fields: [question, answer]}}\n"
        f"      - {{name: gsm8k, uri: '{missing}', fields: [question]}}\n",
        capsys,
    )
    assert code == 2
    assert "benchmark 'gsm8k'" in err and str(missing) in err and "no input found" in err


def test_a_benchmark_file_without_the_field_fails_before_any_stage(tmp_path, raw, capsys):
    bench = tmp_path / "evals" / "mmlu.parquet"
    bench.parent.mkdir()
    pq.write_table(pa.table({"prompt": ["q1", "q2"], "answer": ["a", "b"]}), bench)
    code, err, _ = _curate(
        tmp_path, raw, f"      - {{name: mmlu, uri: '{bench.parent}', fields: [question, answer]}}\n", capsys
    )
    assert code == 2
    assert "benchmarks[0] ('mmlu')" in err and str(bench) in err
    assert "no field 'question'" in err and "fields: answer, prompt" in err


def test_the_single_stage_command_is_checked_too(tmp_path, capsys):
    """`mixforge decontaminate` over contract shards: the same check, before its one stage starts."""
    shard = tmp_path / "in" / "part-00000.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": [prose(1, 2)], "source": ["web"]}), shard)
    bench = tmp_path / "quiz.jsonl.gz"
    bench.write_bytes(gzip.compress(jsonl_bytes([{"question": "q"}])))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"extra_stages:\n  decontaminate:\n    benchmarks:\n      - {{name: quiz, uri: '{bench}', fields: [answer]}}\n"
    )
    store = tmp_path / "store"
    args = ["decontaminate", "--input", str(shard.parent), "--output", str(store), "--config", str(cfg), "-q"]
    assert cli.main(args) == 2 and not store.exists()
    err = capsys.readouterr().err
    assert f"benchmarks[0] ('quiz'): {bench} has no field 'answer' (fields: question)" in err


def test_unreadable_and_empty_files_are_named(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    array = tmp_path / "array.jsonl"
    array.write_bytes(b"[1, 2]\n")
    for path, message in ((broken, "cannot be read"), (empty, "holds no rows"), (array, "not an object")):
        config = DecontamConfig(benchmarks=[{"name": "b", "uri": str(path)}])
        with pytest.raises(ConfigError, match=message) as e:
            check_benchmarks(config)
        assert str(path) in str(e.value) and "('b')" in str(e.value)
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(jsonl_bytes([{"text": "t"}]))
    check_benchmarks(DecontamConfig(benchmarks=[{"name": "b", "uri": str(ok)}]))  # the default field: text
