"""Shard I/O and raw-row validation: every row is kept or dropped with a reason naming shard and line."""

from __future__ import annotations

import gzip
import os
import resource

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge import storage
from mixforge.shards import ReadOptions, ShardUnreadable, ShardWriter, read_documents, read_raw
from tests.helpers import docs, write_shard


def collect(uri, options=ReadOptions(), storage_options=None):
    batches = list(read_raw(uri, options, storage_options))
    kept = pa.concat_tables([b.docs for b in batches])
    rejects = pa.concat_tables([b.rejects for b in batches])
    return kept, rejects


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_reads_into_the_contract(tmp_path, suffix):
    rows = docs(10)
    for r in rows:
        r["lang"] = "en"
    path = write_shard(str(tmp_path / f"shard{suffix}"), rows)
    kept, rejects = collect(path)
    assert kept.schema == S.CORE_SCHEMA
    assert kept.column("id").to_pylist() == [r["id"] for r in rows]
    assert kept.column("text").to_pylist() == [r["text"] for r in rows]
    assert kept.column("url").to_pylist() == [r["url"] for r in rows]
    assert kept.column("meta").to_pylist() == ['{"lang":"en"}'] * 10  # unknown fields preserved
    assert rejects.num_rows == 0


def test_batches_are_bounded(tmp_path):
    path = write_shard(str(tmp_path / "s.jsonl"), docs(1000))
    sizes = [b.docs.num_rows for b in read_raw(path, ReadOptions(batch_rows=128))]
    assert max(sizes) <= 128 and sum(sizes) == 1000


def test_ids_are_derived_from_source_text_hash_and_occurrence(tmp_path):
    rows = [{"text": "same"}, {"text": "same"}, {"text": "other"}, {"text": "same", "source": "web"}]
    kept, _ = collect(write_shard(str(tmp_path / "crawl.jsonl"), rows))
    ids = kept.column("id").to_pylist()
    digest = S.text_digest(b"same")
    assert ids[0] == f"crawl/{digest}-0" and ids[1] == f"crawl/{digest}-1"  # exact duplicates stay distinct
    assert ids[2].startswith("crawl/") and ids[2].endswith("-0")
    assert ids[3] == f"web/{digest}-0"
    assert kept.column("source").to_pylist() == ["crawl", "crawl", "crawl", "web"]
    # The same derivation for Parquet input.
    kept_pq, _ = collect(write_shard(str(tmp_path / "crawl.parquet"), [{"text": "same"}, {"text": "same"}]))
    assert kept_pq.column("id").to_pylist() == ids[:2]


def test_source_from_config_when_absent(tmp_path):
    kept, _ = collect(write_shard(str(tmp_path / "x.jsonl"), [{"text": "a"}, {"text": "b", "source": "own"}]),
                      ReadOptions(default_source="books"))
    assert kept.column("source").to_pylist() == ["books", "own"]


def test_bad_rows_are_dropped_with_reason_naming_shard_and_line(tmp_path):
    lines = [
        {"text": "good one"},
        b"{not json",
        {"text": 42},
        {"body": "no text field"},
        b'{"text": "bad utf8 \xff"}',
        b"[1, 2]",
        {"text": None},
        {"text": "good two"},
    ]
    path = write_shard(str(tmp_path / "bad.jsonl"), lines)
    kept, rejects = collect(path)
    assert kept.column("text").to_pylist() == ["good one", "good two"]
    got = dict(zip(rejects.column(S.DROP_DETAIL).to_pylist(), rejects.column(S.DROP_REASON).to_pylist()))
    assert got == {
        f"{path} line 2: " + next(d for d in got if d.startswith(f"{path} line 2:"))[len(f"{path} line 2: "):]: "invalid_json",
        f"{path} line 3: field 'text' is int, not a string": "text_not_string",
        f"{path} line 4: no 'text' field": "missing_text",
        f"{path} line 5: invalid UTF-8 at byte 19": "invalid_utf8",
        f"{path} line 6: expected a JSON object, got list": "invalid_json",
        f"{path} line 7: 'text' is null": "missing_text",
    }
    assert kept.num_rows + rejects.num_rows == len(lines)


def test_parquet_bad_rows_name_the_row(tmp_path):
    rows = [{"id": "a", "text": "ok"}, {"id": "b", "text": None}, {"id": "c", "text": "x" * 100}]
    path = write_shard(str(tmp_path / "p.parquet"), rows)
    kept, rejects = collect(path, ReadOptions(max_doc_bytes=50))
    assert kept.column("id").to_pylist() == ["a"]
    assert rejects.column("id").to_pylist() == ["b", "c"]
    assert rejects.column(S.DROP_REASON).to_pylist() == ["missing_text", "oversized"]
    assert rejects.column(S.DROP_DETAIL).to_pylist() == [
        f"{path} row 1: 'text' is null",
        f"{path} row 2: text of 100 bytes exceeds max_doc_bytes=50",
    ]


def test_parquet_text_of_wrong_type(tmp_path):
    path = write_shard(str(tmp_path / "n.parquet"), [{"text": 1}, {"text": 2}])
    kept, rejects = collect(path)
    assert kept.num_rows == 0
    assert rejects.column(S.DROP_REASON).to_pylist() == ["text_not_string"] * 2


def test_a_50mb_document_is_dropped_without_holding_it(tmp_path):
    path = str(tmp_path / "huge.jsonl.gz")
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b'{"text": "before"}\n')
        f.write(b'{"text": "' + b"a" * (50 << 20) + b'"}\n')
        f.write(b'{"text": "after"}\n')
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept, rejects = collect(path, ReadOptions(max_doc_bytes=1 << 20))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert kept.column("text").to_pylist() == ["before", "after"]
    assert rejects.column(S.DROP_REASON).to_pylist() == ["oversized"]
    assert "line 2" in rejects.column(S.DROP_DETAIL)[0].as_py()
    assert grown_mb < 40, f"reading grew peak RSS by {grown_mb:.0f} MiB: the oversized line was held whole"


def test_empty_shards_are_fine(tmp_path):
    for path in (write_shard(str(tmp_path / "e.jsonl"), []), write_shard(str(tmp_path / "e.jsonl.zst"), [])):
        kept, rejects = collect(path)
        assert kept.num_rows == 0 and rejects.num_rows == 0
    empty_pq = str(tmp_path / "e.parquet")
    pq.write_table(S.CORE_SCHEMA.empty_table(), empty_pq)
    kept, _ = collect(empty_pq)
    assert kept.num_rows == 0


@pytest.mark.parametrize("name,content", [
    ("trunc.jsonl.gz", gzip.compress(b"".join(b'{"text": "%d"}\n' % (i * 7919) for i in range(20000)))[:2000]),
    ("corrupt.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"garbage" * 50),
    ("corrupt.parquet", b"PAR1 this is not parquet at all"),
    ("truncated.parquet", None),
])
def test_unreadable_shards_raise_shard_unreadable(tmp_path, name, content):
    path = str(tmp_path / name)
    if content is None:
        write_shard(path, docs(100))
        data = open(path, "rb").read()
        content = data[: len(data) // 2]
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ShardUnreadable, match=name):
        collect(path)


def test_missing_shard_is_unreadable(tmp_path):
    with pytest.raises(ShardUnreadable, match="not found"):
        collect(str(tmp_path / "gone.jsonl"))


def test_discovery_skips_metadata_and_sorts(tmp_path):
    for name in ["b.jsonl", "a.parquet", "sub/c.jsonl.zst", "_removed/x.parquet", "_stats.json", ".tmp-x.parquet", "notes.txt"]:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    found = [os.path.relpath(s.uri, tmp_path) for s in storage.discover_shards(str(tmp_path))]
    assert found == ["a.parquet", "b.jsonl", "sub/c.jsonl.zst"]
    assert [os.path.basename(s.uri) for s in storage.discover_shards(str(tmp_path / "*.jsonl"))] == ["b.jsonl"]
    with pytest.raises(FileNotFoundError):
        storage.discover_shards(str(tmp_path / "nothing-here"))


def test_writer_is_atomic_and_writes_empty_shards(tmp_path):
    out = str(tmp_path / "o" / "part-00000.parquet")
    w = ShardWriter(out, row_group_bytes=1)  # flush at once: bytes are on disk before the abort
    w.write(pa.Table.from_pylist(docs(3), schema=S.CORE_SCHEMA.remove(4)).append_column("meta", pa.nulls(3, pa.string())))
    assert os.listdir(tmp_path / "o")  # a hidden temp file, not the shard
    w.abort()
    assert not os.path.exists(out) and os.listdir(tmp_path / "o") == []
    w = ShardWriter(out)
    w.close()
    assert pq.read_table(out).schema == S.CORE_SCHEMA


def test_s3_round_trip_through_moto(s3_bucket):
    import s3fs

    root, opts = s3_bucket
    fs = s3fs.S3FileSystem(**opts)
    write_shard(f"{root}/in/a.jsonl.zst".removeprefix("s3://"), docs(5), fs=fs)
    shards = storage.discover_shards(f"{root}/in/", opts)
    assert [s.uri for s in shards] == [f"{root}/in/a.jsonl.zst"] and shards[0].size > 0
    kept, _ = collect(shards[0].uri, storage_options=opts)
    out = f"{root}/out/part-00000.parquet"
    w = ShardWriter(out, storage_options=opts)
    w.write(kept)
    w.close()
    assert pa.concat_tables(read_documents(out, storage_options=opts)).equals(kept)
    # An aborted write leaves nothing visible on S3.
    w = ShardWriter(f"{root}/out/part-00001.parquet", storage_options=opts, row_group_bytes=1)
    w.write(kept)
    w.abort()
    assert not storage.exists(f"{root}/out/part-00001.parquet", opts)
    assert storage.create_only(f"{root}/v/manifest.json", b"1", opts) is True
    assert storage.create_only(f"{root}/v/manifest.json", b"2", opts) is False
