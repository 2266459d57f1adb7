"""Streaming shard I/O: Parquet and JSONL (.jsonl, .jsonl.gz, .jsonl.zst) on any fsspec URI.

Reading yields bounded-size Arrow batches; no shard or corpus is ever held whole.

* `read_raw` turns arbitrary input rows into the document contract (schema.py) and reports
  every row it cannot use (with a reason naming shard and line/row) instead of failing.
* `read_documents` streams shards that are already in the contract (a stage's output).
* `ShardWriter` writes zstd Parquet that appears atomically (storage.atomic_open).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from mixforge import schema as S
from mixforge.storage import atomic_open, filesystem, is_local

PARQUET_COMPRESSION = "zstd"
REJECT_PREVIEW_CHARS = 4096  # text kept in the audit for rows that could not be used
REJECT_SCHEMA = pa.schema(list(S.CORE_SCHEMA) + [pa.field(S.DROP_REASON, pa.string()), pa.field(S.DROP_DETAIL, pa.string())])


_MISSING = object()


class ShardUnreadable(Exception):
    """The shard as a whole cannot be read (missing, truncated, corrupt); it is quarantined."""


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"
    id_field: str = "id"
    batch_rows: int = 4096
    batch_bytes: int = 32 << 20
    max_doc_bytes: int = 8 << 20
    default_source: str | None = None  # used when a row has no `source`; else the shard's name


@dataclass
class RawBatch:
    docs: pa.Table  # CORE_SCHEMA
    rejects: pa.Table  # REJECT_SCHEMA


@dataclass
class _Rows:
    """Column builders for one batch of raw rows."""

    ids: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    urls: list = field(default_factory=list)
    metas: list = field(default_factory=list)
    nbytes: int = 0

    def table(self, schema: pa.Schema, extra: Mapping[str, list] | None = None) -> pa.Table:
        cols = [self.ids, self.texts, self.sources, self.urls, self.metas]
        arrays = [pa.array(c, type=f.type) for c, f in zip(cols, S.CORE_SCHEMA)]
        for name, values in (extra or {}).items():
            arrays.append(pa.array(values, type=pa.string()))
        return pa.Table.from_arrays(arrays, schema=schema)


def shard_format(uri: str) -> str:
    name = uri.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")):
        return "jsonl"
    raise ShardUnreadable(f"{uri}: unknown shard format (expected .parquet, .jsonl, .jsonl.gz or .jsonl.zst)")


def shard_stem(uri: str) -> str:
    base = os.path.basename(uri.rstrip("/"))
    for suffix in (".parquet", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".jsonl"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


@contextlib.contextmanager
def _open_shard(uri: str, storage_options: Mapping[str, Any] | None):
    """Open a shard for streaming reads, decompressing .gz/.zst on the fly (with readline)."""
    try:
        fs, path = filesystem(uri, storage_options)
        raw = fs.open(path, "rb")
    except FileNotFoundError as e:
        raise ShardUnreadable(f"{uri}: file not found") from e
    with raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield io.BufferedReader(f, buffer_size=1 << 20)
        elif path.endswith(".zst"):
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            with io.BufferedReader(reader, buffer_size=1 << 20) as f:
                yield f
        elif is_local(fs):
            yield raw
        else:  # fsspec's remote files have no readline(size): buffer them
            yield io.BufferedReader(raw, buffer_size=1 << 20)


def _wrap_read_errors(uri: str, it: Iterator) -> Iterator:
    """Turn low-level decode errors (corrupt gzip/zstd/parquet, truncation) into ShardUnreadable."""
    try:
        yield from it
    except ShardUnreadable:
        raise
    except (OSError, EOFError, ValueError, pa.ArrowException) as e:
        raise ShardUnreadable(f"{uri}: {type(e).__name__}: {e}") from e
    except Exception as e:  # zstandard.ZstdError and friends do not share a base class
        if type(e).__module__.startswith(("zstandard", "zlib", "gzip", "_compression")):
            raise ShardUnreadable(f"{uri}: {type(e).__name__}: {e}") from e
        raise


# ----------------------------------------------------------------------------- raw input


class _IdDeriver:
    """Derives contract ids for rows without one: source / hash of raw text - occurrence."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def __call__(self, source: str, raw: bytes) -> str:
        digest = S.text_digest(raw)
        key = (source, digest)
        occurrence = self._seen.get(key, 0)
        self._seen[key] = occurrence + 1
        return S.derive_id(source, digest, occurrence)


def read_raw(uri: str, options: ReadOptions = ReadOptions(), storage_options: Mapping[str, Any] | None = None) -> Iterator[RawBatch]:
    """Stream a raw input shard as contract documents plus rejected rows.

    Raises ShardUnreadable when the shard itself cannot be read; rows already yielded
    are then discarded by the caller (the shard is quarantined whole).
    """
    source = options.default_source or shard_stem(uri)
    reader = _read_raw_jsonl if shard_format(uri) == "jsonl" else _read_raw_parquet
    return _wrap_read_errors(uri, reader(uri, options, source, storage_options))


def _read_raw_jsonl(uri: str, opt: ReadOptions, default_source: str, storage_options) -> Iterator[RawBatch]:
    derive = _IdDeriver()
    line_cap = 2 * opt.max_doc_bytes + 4096  # a JSON line can be at most ~2x its text (escapes)
    with _open_shard(uri, storage_options) as f:
        rows, bad = _Rows(), _Rows()
        reasons: list[str] = []
        details: list[str] = []
        lineno = 0

        def reject(reason: str, detail: str, text: str | None, raw: bytes) -> None:
            bad.ids.append(derive(default_source, raw))
            bad.texts.append(text[:REJECT_PREVIEW_CHARS] if text else None)
            bad.sources.append(default_source)
            bad.urls.append(None)
            bad.metas.append(None)
            reasons.append(reason)
            details.append(f"{uri} line {lineno}: {detail}")

        while True:
            line = f.readline(line_cap)
            if not line:
                break
            lineno += 1
            if len(line) >= line_cap and not line.endswith(b"\n"):
                # Oversized: skip the rest of the line in bounded chunks, never hold it whole.
                size = len(line)
                while (chunk := f.readline(line_cap)) and not chunk.endswith(b"\n"):
                    size += len(chunk)
                size += len(chunk)
                reject("oversized", f"line of {size} bytes exceeds max_doc_bytes={opt.max_doc_bytes}",
                       line[:REJECT_PREVIEW_CHARS].decode("utf-8", "replace"), line[:65536])
                continue
            if not line.strip():
                continue  # blank lines are not documents
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as e:
                reject("invalid_utf8", f"invalid UTF-8 at byte {e.start}", line.decode("utf-8", "replace"), line)
                continue
            try:
                obj = orjson.loads(decoded)
            except orjson.JSONDecodeError as e:
                reject("invalid_json", f"not valid JSON ({e})", decoded, line)
                continue
            if not isinstance(obj, dict):
                reject("invalid_json", f"expected a JSON object, got {type(obj).__name__}", decoded, line)
                continue
            text = obj.pop(opt.text_field, _MISSING)
            if text is _MISSING or text is None:
                what = f"no {opt.text_field!r} field" if text is _MISSING else f"{opt.text_field!r} is null"
                reject("missing_text", what, decoded, line)
                continue
            if not isinstance(text, str):
                reject("text_not_string", f"field {opt.text_field!r} is {type(text).__name__}, not a string", decoded, line)
                continue
            raw = text.encode("utf-8", "surrogatepass")
            if len(raw) > opt.max_doc_bytes:
                reject("oversized", f"text of {len(raw)} bytes exceeds max_doc_bytes={opt.max_doc_bytes}", text, raw)
                continue
            source = obj.pop(S.SOURCE, None)
            source = source if isinstance(source, str) and source else default_source
            doc_id = obj.pop(opt.id_field, None)
            rows.ids.append(str(doc_id) if isinstance(doc_id, (str, int)) and doc_id != "" else derive(source, raw))
            rows.texts.append(text)
            rows.sources.append(source)
            url = obj.pop(S.URL, None)
            rows.urls.append(url if isinstance(url, str) else None)
            if url is not None and not isinstance(url, str):
                obj[S.URL] = url
            rows.metas.append(orjson.dumps(obj).decode() if obj else None)
            rows.nbytes += len(line)
            if len(rows.ids) >= opt.batch_rows or rows.nbytes >= opt.batch_bytes:
                yield RawBatch(rows.table(S.CORE_SCHEMA), bad.table(REJECT_SCHEMA, {S.DROP_REASON: reasons, S.DROP_DETAIL: details}))
                rows, bad, reasons, details = _Rows(), _Rows(), [], []
        yield RawBatch(rows.table(S.CORE_SCHEMA), bad.table(REJECT_SCHEMA, {S.DROP_REASON: reasons, S.DROP_DETAIL: details}))


def _read_raw_parquet(uri: str, opt: ReadOptions, default_source: str, storage_options) -> Iterator[RawBatch]:
    derive = _IdDeriver()
    with _open_shard(uri, storage_options) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as e:
            raise ShardUnreadable(f"{uri}: not a readable Parquet file: {e}") from e
        # Rows per batch bounded by bytes too: estimate from the file's average row size.
        md = pf.metadata
        avg_row = (sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)) / md.num_rows) if md.num_rows else 1
        batch_rows = max(1, min(opt.batch_rows, int(opt.batch_bytes / max(avg_row, 1))))
        first_row = 0
        for rb in pf.iter_batches(batch_size=batch_rows, use_threads=False):
            table = pa.Table.from_batches([rb])
            yield _raw_table_to_docs(uri, table, first_row, opt, default_source, derive)
            first_row += table.num_rows
        if md.num_rows == 0:
            yield RawBatch(S.CORE_SCHEMA.empty_table(), REJECT_SCHEMA.empty_table())


def _raw_table_to_docs(uri: str, table: pa.Table, first_row: int, opt: ReadOptions, default_source: str, derive: _IdDeriver) -> RawBatch:
    """Vectorised validation and normalisation of one raw Parquet batch into the contract."""
    n = table.num_rows
    names = table.column_names
    row_numbers = pa.array(range(first_row, first_row + n), type=pa.int64())

    # --- text: present, string, valid UTF-8, bounded size
    reason = pa.nulls(n, pa.string())
    detail = pa.nulls(n, pa.string())
    if opt.text_field not in names:
        text = pa.nulls(n, pa.string())
        reason = pa.array(["missing_text"] * n, pa.string())
        detail = pa.array([f"no {opt.text_field!r} column"] * n, pa.string())
    else:
        text = table.column(opt.text_field).combine_chunks()
        if pa.types.is_large_string(text.type) or pa.types.is_string_view(text.type):
            text = text.cast(pa.string())
        elif pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
            text, bad_utf8 = _decode_binary(text)
            reason = pc.if_else(bad_utf8, "invalid_utf8", reason)
            detail = pc.if_else(bad_utf8, "invalid UTF-8", detail)
        elif not pa.types.is_string(text.type):
            reason = pa.array(["text_not_string"] * n, pa.string())
            detail = pa.array([f"column {opt.text_field!r} has type {text.type}, not string"] * n, pa.string())
            text = pa.nulls(n, pa.string())
        size = pc.binary_length(text)
        oversized = pc.fill_null(pc.greater(size, opt.max_doc_bytes), False)
        reason = pc.if_else(pc.and_(pc.is_null(reason), oversized), "oversized", reason)
        detail = pc.if_else(pc.and_(pc.is_null(detail), oversized),
                            pc.binary_join_element_wise("text of ", pc.cast(size, pa.string()), f" bytes exceeds max_doc_bytes={opt.max_doc_bytes}", ""), detail)
        missing = pc.and_(pc.is_null(reason), pc.is_null(text))
        reason = pc.if_else(missing, "missing_text", reason)
        detail = pc.if_else(missing, f"{opt.text_field!r} is null", detail)

    # --- source, url, meta
    if S.SOURCE in names:
        source = pc.fill_null(table.column(S.SOURCE).cast(pa.string()).combine_chunks(), default_source)
    else:
        source = pa.array([default_source] * n, pa.string())
    url = table.column(S.URL).cast(pa.string()).combine_chunks() if S.URL in names and _castable_to_string(table.schema.field(S.URL).type) else pa.nulls(n, pa.string())
    meta_cols = [c for c in names if c not in (opt.text_field, opt.id_field, S.SOURCE) and not (c == S.URL and _castable_to_string(table.schema.field(c).type))]
    meta = _json_objects(table.select(meta_cols)) if meta_cols else pa.nulls(n, pa.string())

    # --- ids: given (cast to string) or derived from source + raw text hash + occurrence
    given = table.column(opt.id_field).combine_chunks() if opt.id_field in names else pa.nulls(n, pa.string())
    given = given.cast(pa.string()) if _castable_to_string(given.type) else pa.nulls(n, pa.string())
    given = pc.if_else(pc.equal(given, ""), pa.scalar(None, pa.string()), given)
    if given.null_count:
        src_list, text_list, given_list = source.to_pylist(), text.to_pylist(), given.to_pylist()
        ids = pa.array([g if g is not None else derive(s, (t or "").encode("utf-8", "surrogatepass"))
                        for g, s, t in zip(given_list, src_list, text_list)], pa.string())
    else:
        ids = given

    docs = pa.Table.from_arrays([ids, text, source, url, meta], schema=S.CORE_SCHEMA)
    bad = pc.is_valid(reason)
    if not pc.any(bad).as_py():
        return RawBatch(docs, REJECT_SCHEMA.empty_table())
    kept = docs.filter(pc.invert(bad))
    rejected = docs.filter(bad)
    where = pc.binary_join_element_wise(f"{uri} row ", pc.cast(row_numbers.filter(bad), pa.string()), ": ", detail.filter(bad), "")
    preview = pc.utf8_slice_codeunits(rejected.column(S.TEXT), 0, REJECT_PREVIEW_CHARS)
    rejected = rejected.set_column(1, S.TEXT, preview).append_column(S.DROP_REASON, reason.filter(bad)).append_column(S.DROP_DETAIL, where)
    return RawBatch(kept, rejected)


def _castable_to_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t) or pa.types.is_string_view(t)


def _decode_binary(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    try:
        return arr.cast(pa.string()), pa.array([False] * len(arr))
    except pa.ArrowInvalid:
        texts, bad = [], []
        for b in arr.to_pylist():
            try:
                texts.append(None if b is None else b.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                texts.append(b.decode("utf-8", "replace"))
                bad.append(True)
        return pa.array(texts, pa.string()), pa.array(bad)


def _json_objects(table: pa.Table) -> pa.Array:
    """Encode each row of `table` as a JSON object string (vectorised through Polars)."""
    df = pl.from_arrow(table)
    encoded = df.select(pl.struct(pl.all()).struct.json_encode().alias("m")).to_series().to_arrow()
    return encoded.cast(pa.string())


# ----------------------------------------------------------------------------- contract input


def read_documents(uri: str, batch_rows: int = 8192, columns: list[str] | None = None,
                   storage_options: Mapping[str, Any] | None = None) -> Iterator[pa.Table]:
    """Stream a contract shard (a stage's output) as Arrow tables."""
    def gen():
        with _open_shard(uri, storage_options) as f:
            pf = pq.ParquetFile(f)
            if pf.metadata.num_rows == 0:
                yield pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
                return
            for rb in pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
                yield pa.Table.from_batches([rb])
    return _wrap_read_errors(uri, gen())


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes one Parquet shard (zstd) that appears atomically when closed.

    Batches are buffered into row groups of about `row_group_bytes`; the schema is fixed by
    the first batch (later batches are cast to it). An empty shard still gets a valid file
    with `empty_schema`, so outputs stay 1:1 with inputs.
    """

    def __init__(self, uri: str, empty_schema: pa.Schema = S.CORE_SCHEMA, storage_options: Mapping[str, Any] | None = None,
                 row_group_bytes: int = 32 << 20) -> None:
        self.uri = uri
        self.rows = 0
        self._empty_schema = empty_schema
        self._storage_options = storage_options
        self._row_group_bytes = row_group_bytes
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
        self._ctx = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema  # an empty batch still fixes the schema of an empty shard
        if table.num_rows == 0:
            return
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self._pending_bytes >= self._row_group_bytes:
            self._flush()

    def _open(self, schema: pa.Schema) -> None:
        self._ctx = atomic_open(self.uri, self._storage_options)
        self._writer = pq.ParquetWriter(self._ctx.__enter__(), schema, compression=PARQUET_COMPRESSION)

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._open(self._schema)
        table = pa.concat_tables(self._pending)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # no rows: still a valid (empty) shard with the right schema
            self._open(self._schema or self._empty_schema)
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard everything written: the target never appears."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        if self._ctx is not None:
            with contextlib.suppress(RuntimeError):
                self._ctx.__exit__(RuntimeError, RuntimeError("shard write aborted"), None)
            self._ctx = None
