"""The one Parquet read and write helpers (mixforge.shards): writer options pass through unchanged."""

import io

import pyarrow as pa
import pyarrow.parquet as pq

from mixforge import shards
from mixforge.mixtures.write import parquet_bytes as mixture_parquet_bytes

TABLE = pa.table({"id": [f"d{i}" for i in range(10)], "n": list(range(10))})


def _direct(**options) -> bytes:
    buf = io.BytesIO()
    pq.write_table(TABLE, buf, **options)
    return buf.getvalue()


def test_bytes_are_those_pyarrow_writes_with_the_same_options():
    assert shards.parquet_bytes(TABLE, compression="zstd") == _direct(compression="zstd")
    assert shards.parquet_bytes(TABLE, compression="zstd", row_group_size=3) == _direct(
        compression="zstd", row_group_size=3
    )
    assert mixture_parquet_bytes(TABLE, 0, "snappy") == _direct(compression="snappy", row_group_size=1)


def test_write_read_and_open_round_trip(tmp_path):
    uri = str(tmp_path / "sub" / "t.parquet")
    shards.write_parquet(uri, TABLE, None, compression="zstd", row_group_size=4)
    assert open(uri, "rb").read() == _direct(compression="zstd", row_group_size=4)
    assert shards.read_parquet(uri).equals(TABLE)
    assert shards.read_parquet(uri, columns=["n"]).column_names == ["n"]
    with shards.parquet_file(f"file://{uri}") as pf:
        assert pf.metadata.num_row_groups == 3
        assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
        assert pf.read_row_groups([2]).column("id").to_pylist() == ["d8", "d9"]


def test_storage_read_bytes_reads_what_write_bytes_wrote(tmp_path):
    from mixforge import storage

    uri = str(tmp_path / "a" / "blob.bin")
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    storage.write_json(uri, {"b": 1, "a": [2]})
    assert storage.read_json(uri) == {"a": [2], "b": 1}
