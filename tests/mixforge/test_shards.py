"""Shard I/O and raw-row validation: every row is kept or dropped with a reason naming shard and line."""

from __future__ import annotations

import gzip
import json
import os
import re
import resource

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixforge import schema as S
from mixforge import storage
from mixforge.shards import ReadConfig, ShardUnreadable, ShardWriter, read_documents, read_raw
from tests.helpers import docs, write_shard


def collect(uri, options=ReadConfig(), storage_options=None):
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
    sizes = [b.docs.num_rows for b in read_raw(path, ReadConfig(batch_rows=128))]
    assert max(sizes) <= 128 and sum(sizes) == 1000


def test_ids_are_derived_from_source_shard_text_hash_and_occurrence(tmp_path):
    rows = [{"text": "same"}, {"text": "same"}, {"text": "other"}, {"text": "same", "source": "web"}]
    path = write_shard(str(tmp_path / "crawl.jsonl"), rows)
    kept, _ = collect(path)
    ids = kept.column("id").to_pylist()
    digest, tag = S.text_digest(b"same"), S.shard_tag(path)
    assert (
        ids[0] == f"crawl/{tag}/{digest}-0" and ids[1] == f"crawl/{tag}/{digest}-1"
    )  # exact duplicates stay distinct
    assert ids[2].startswith(f"crawl/{tag}/") and ids[2].endswith("-0")
    assert ids[3] == f"web/{tag}/{digest}-0"
    assert kept.column("source").to_pylist() == ["crawl", "crawl", "crawl", "web"]
    # The same derivation for Parquet input; another shard with the same texts and source derives other ids.
    pq_path = write_shard(str(tmp_path / "crawl.parquet"), [{"text": "same"}, {"text": "same"}])
    kept_pq, _ = collect(pq_path)
    assert kept_pq.column("id").to_pylist() == [f"crawl/{S.shard_tag(pq_path)}/{digest}-{i}" for i in (0, 1)]
    copy = write_shard(str(tmp_path / "copy" / "crawl.jsonl"), rows)
    assert set(collect(copy)[0].column("id").to_pylist()).isdisjoint(ids)


def test_occurrences_count_across_batches(tmp_path):
    rows = [{"text": f"t{i % 3}", "source": "s" if i % 2 else "u"} for i in range(40)]
    path = write_shard(str(tmp_path / "x.parquet"), rows)
    one = collect(path)[0].column("id").to_pylist()
    for batch_rows in (1, 3, 7):
        assert collect(path, ReadConfig(batch_rows=batch_rows))[0].column("id").to_pylist() == one
    assert len(set(one)) == 40
    expected, seen = [], {}
    for r in rows:
        key = (r["source"], r["text"])
        expected.append(f"{r['source']}/{S.shard_tag(path)}/{S.text_digest(r['text'].encode())}-{seen.get(key, 0)}")
        seen[key] = seen.get(key, 0) + 1
    assert one == expected


def test_source_from_config_when_absent(tmp_path):
    kept, _ = collect(
        write_shard(str(tmp_path / "x.jsonl"), [{"text": "a"}, {"text": "b", "source": "own"}]),
        ReadConfig(source="books"),
    )
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
        f"{path} line 2: "
        + next(d for d in got if d.startswith(f"{path} line 2:"))[len(f"{path} line 2: ") :]: "invalid_json",
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
    kept, rejects = collect(path, ReadConfig(max_doc_bytes=50))
    assert kept.column("id").to_pylist() == ["a"]
    assert rejects.column("id").to_pylist() == ["b", "c"]
    assert rejects.column(S.DROP_REASON).to_pylist() == ["missing_text", "oversized"]
    assert rejects.column(S.DROP_DETAIL).to_pylist() == [
        f"{path} row 1: 'text' is null",
        f"{path} row 2: text of 100 bytes exceeds max_doc_bytes=50",
    ]
    assert rejects.column(S.DROP_ROW).to_pylist() == [1, 2]  # where, as data: the runner never parses the detail


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
    kept, rejects = collect(path, ReadConfig(max_doc_bytes=1 << 20))
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


@pytest.mark.parametrize(
    "name,content",
    [
        ("trunc.jsonl.gz", gzip.compress(b"".join(b'{"text": "%d"}\n' % (i * 7919) for i in range(20000)))[:2000]),
        ("corrupt.jsonl.zst", b"\x28\xb5\x2f\xfd" + b"garbage" * 50),
        ("corrupt.parquet", b"PAR1 this is not parquet at all"),
        ("truncated.parquet", None),
    ],
)
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
    for name in [
        "b.jsonl",
        "a.parquet",
        "sub/c.jsonl.zst",
        "_removed/x.parquet",
        "_stats.json",
        ".tmp-x.parquet",
        "notes.txt",
    ]:
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
    w.write(
        pa.Table.from_pylist(docs(3), schema=S.CORE_SCHEMA.remove(4)).append_column("meta", pa.nulls(3, pa.string()))
    )
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


# ----------------------------------------------------------------------------- damaged streams


def jsonl_rows(n: int, first: int = 0) -> bytes:
    return b"".join(
        b'{"id": "r%d", "text": "row %d %s"}\n' % (i, i * 7919, b"x" * (i % 40)) for i in range(first, first + n)
    )


def zstd_frames(data: bytes, checksum: bool = True) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(write_checksum=checksum).compress(data)


def unreadable(path, content: bytes) -> ShardUnreadable:
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ShardUnreadable) as err:
        collect(str(path))
    assert str(err.value).startswith(f"{path}: ")
    return err.value


@pytest.mark.parametrize("percent", [10, 50, 99])
@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
def test_a_truncated_stream_is_unreadable_at_its_end_offset(tmp_path, suffix, percent):
    data = jsonl_rows(2000)
    packed = zstd_frames(data, checksum=False) if suffix.endswith("zst") else gzip.compress(data)
    cut = len(packed) * percent // 100
    err = unreadable(tmp_path / f"cut{suffix}", packed[:cut])
    assert f"truncated: it ends at compressed byte {cut} inside the " in str(err)
    assert 0 <= err.rows_decoded < 2000 and err.rows_declared is None


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
def test_trailing_garbage_is_unreadable_and_the_valid_rows_are_counted(tmp_path, suffix):
    packed = zstd_frames(jsonl_rows(500)) if suffix.endswith("zst") else gzip.compress(jsonl_rows(500))
    err = unreadable(tmp_path / f"g{suffix}", packed + b"not a frame")
    assert (
        f"trailing bytes that are not {'a zstd frame' if suffix.endswith('zst') else 'gzip'} "
        f"at compressed byte {len(packed)}" in str(err)
    )
    assert err.rows_decoded == 500  # the rows before the garbage were all decoded


def test_multi_frame_and_multi_member_streams_and_gzip_zero_padding_are_fine(tmp_path):
    a, b = jsonl_rows(10), jsonl_rows(7, first=10)
    for name, content in (
        ("f.jsonl.zst", zstd_frames(a) + zstd_frames(b, checksum=False)),
        ("m.jsonl.gz", gzip.compress(a) + gzip.compress(b)),
        ("p.jsonl.gz", gzip.compress(a + b) + b"\0" * 1000),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        assert collect(str(path))[0].num_rows == 17


def test_a_skippable_zstd_frame_is_skipped(tmp_path):
    skippable = (0x184D2A50).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    path = tmp_path / "s.jsonl.zst"
    path.write_bytes(skippable + zstd_frames(jsonl_rows(3)))
    assert collect(str(path))[0].num_rows == 3


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
def test_a_corrupt_block_is_unreadable(tmp_path, suffix):
    packed = bytearray(zstd_frames(jsonl_rows(2000)) if suffix.endswith("zst") else gzip.compress(jsonl_rows(2000)))
    packed[len(packed) // 2] ^= 0xFF
    err = unreadable(tmp_path / f"c{suffix}", bytes(packed))
    assert re.search(r"compressed byte \d+", str(err))


def test_a_utf16_file_is_unreadable_not_a_pile_of_bad_rows(tmp_path):
    err = unreadable(tmp_path / "u.jsonl", jsonl_rows(3).decode().encode("utf-16"))
    assert "must be UTF-8" in str(err) and err.rows_decoded == 0


def test_a_corrupt_parquet_page_is_unreadable_with_the_footers_row_count(tmp_path):
    path = str(tmp_path / "p.parquet")
    w = ShardWriter(path, row_group_bytes=1)  # one row group per write; page checksums on
    for i in range(3):
        w.write(
            pa.Table.from_pylist(docs(10, f"g{i}"), schema=S.CORE_SCHEMA.remove(4)).append_column(
                "meta", pa.nulls(10, pa.string())
            )
        )
    w.close()
    data = bytearray(open(path, "rb").read())
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)
    data[column.dictionary_page_offset + 64] ^= 0xFF  # inside the dictionary page's data (past its header)
    open(path, "wb").write(bytes(data))
    with pytest.raises(ShardUnreadable, match=r"row group 2 \(compressed bytes \d+\.\.\d+\)") as err:
        list(read_documents(path, batch_rows=4))
    assert (err.value.rows_decoded, err.value.rows_declared) == (20, 30)


def test_a_corrupt_parquet_footer_names_where_it_is(tmp_path):
    path = write_shard(str(tmp_path / "f.parquet"), docs(5))
    data = bytearray(open(path, "rb").read())
    length = int.from_bytes(data[-8:-4], "little")
    data[-8 - length : -8] = b"\x00" * length
    err = unreadable(path, bytes(data))
    assert f"footer of {length} bytes at compressed byte {len(data) - 8 - length}" in str(err)
    assert (err.rows_decoded, err.rows_declared) == (0, None)


# ----------------------------------------------------------------------------- quiet omissions


@pytest.mark.parametrize("name", ["UP.JSONL", "Up.Parquet", "UP.JSONL.GZ", "Up.Jsonl.Zst"])
def test_extensions_match_in_any_case(tmp_path, name):
    from mixforge.shards import shard_format, shard_stem

    lower = write_shard(str(tmp_path / name.lower()), docs(3))
    path = str(tmp_path / name)
    os.rename(lower, path)
    assert shard_stem(path) == name.split(".")[0]
    assert shard_format(path) == ("parquet" if "parquet" in name.lower() else "jsonl")
    kept, _ = collect(path)
    assert kept.column("id").to_pylist() == ["d-0", "d-1", "d-2"]


def test_fields_that_cannot_fill_their_column_stay_in_meta(tmp_path):
    rows = [
        {"text": "a", "source": 5},
        {"text": "b", "source": ["x"]},
        {"text": "c", "source": {"k": 1}},
        {"text": "d", "id": 1.5},
        {"text": "e", "id": True},
        {"text": "f", "id": None},
        {"text": "g", "id": [1]},
        {"text": "h", "id": {"k": "v"}},
        {"text": "i", "id": 12, "source": "own"},
        {"text": "j", "id": ""},
    ]
    path = write_shard(str(tmp_path / "m.jsonl"), rows)
    kept, rejects = collect(path)
    assert rejects.num_rows == 0
    metas = [json.loads(m) if m else None for m in kept.column("meta").to_pylist()]
    assert metas == [
        {"source": 5},
        {"source": ["x"]},
        {"source": {"k": 1}},
        {"id": 1.5},
        {"id": True},
        {"id": None},
        {"id": [1]},
        {"id": {"k": "v"}},
        None,
        None,
    ]
    assert kept.column("source").to_pylist() == ["m"] * 8 + ["own", "m"]
    ids = kept.column("id").to_pylist()
    assert ids[8] == "12" and all(i.startswith(f"m/{S.shard_tag(path)}/") for i in ids[:8] + ids[9:])

    table = pa.table(
        {
            "text": ["a", "b"],
            "id": pa.array([1.5, None]),
            "source": pa.array([1, 2], pa.int8()),
            "blob": pa.array([b"\xff\x00", None], pa.binary()),
            "nested": pa.array([{"b": b"x"}, None]),
        }
    )
    pq_path = str(tmp_path / "m.parquet")
    pq.write_table(table, pq_path)
    kept, rejects = collect(pq_path)
    assert rejects.num_rows == 0 and kept.column("source").to_pylist() == ["m", "m"]
    assert [json.loads(m) for m in kept.column("meta").to_pylist()] == [
        {"id": 1.5, "source": 1, "blob": "/wA=", "nested": {"b": "eA=="}},
        {"id": None, "source": 2, "blob": None, "nested": None},
    ]
    assert all(i.startswith(f"m/{S.shard_tag(pq_path)}/") for i in kept.column("id").to_pylist())


def test_repeated_input_ids_in_a_shard_are_dropped_naming_the_first(tmp_path):
    rows = [{"id": i, "text": f"t{n}"} for n, i in enumerate(["a", "b", "a", 7, "7", "c", "b"])]
    path = write_shard(str(tmp_path / "d.jsonl"), rows)
    kept, rejects = collect(path, ReadConfig(batch_rows=2))  # across batches too
    assert kept.column("id").to_pylist() == ["a", "b", "7", "c"]
    assert rejects.column(S.DROP_REASON).to_pylist() == ["duplicate_id"] * 3
    assert rejects.column(S.DROP_DETAIL).to_pylist() == [
        f"{path} line 3: id 'a' already used at line 1",
        f"{path} line 5: id '7' already used at line 4",
        f"{path} line 7: id 'b' already used at line 2",
    ]
    assert rejects.column("text").to_pylist() == ["t2", "t4", "t6"]  # the whole document is in the audit
    assert rejects.column(S.DROP_ROW).to_pylist() == [3, 5, 7]

    pq_path = write_shard(str(tmp_path / "d.parquet"), [{"id": f"p{n % 3}", "text": f"t{n}"} for n in range(8)])
    kept, rejects = collect(pq_path, ReadConfig(batch_rows=3))
    assert kept.column("id").to_pylist() == ["p0", "p1", "p2"]
    assert rejects.column(S.DROP_DETAIL).to_pylist()[:2] == [
        f"{pq_path} row 3: id 'p0' already used at row 0",
        f"{pq_path} row 4: id 'p1' already used at row 1",
    ]
    assert rejects.column(S.DROP_ROW).to_pylist() == [3, 4, 5, 6, 7]


def test_bom_lone_surrogates_and_raw_nuls(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"text": "first"}\n{"text": "lone \\ud800"}\n{"text": "raw \x00 nul"}\n{"text": "ok \\u0000"}\n'
    )
    kept, rejects = collect(str(path))
    assert kept.column("text").to_pylist() == ["first", "ok \x00"]
    assert rejects.column(S.DROP_REASON).to_pylist() == ["invalid_utf8", "invalid_json"]
    assert rejects.column(S.DROP_DETAIL)[0].as_py().startswith(f"{path} line 2: lone surrogate")


def test_positions_name_lines_and_rows(tmp_path):
    path = write_shard(str(tmp_path / "p.jsonl"), [{"text": "a"}, b"", {"text": 1}, {"text": "b"}])
    batches = list(read_raw(path))
    assert batches[0].positions.to_pylist() == [1, 4] and batches[0].unit == "line"
    pq_path = write_shard(str(tmp_path / "p.parquet"), [{"text": "a"}, {"text": None}, {"text": "b"}])
    (batch,) = list(read_raw(pq_path))
    assert batch.positions.to_pylist() == [0, 2] and batch.unit == "row"
