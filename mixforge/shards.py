"""Streaming shard I/O: Parquet and JSONL (.jsonl, .jsonl.gz, .jsonl.zst) on any fsspec URI.

Reading yields bounded-size Arrow batches; no shard or corpus is ever held whole.

* `read_raw` turns arbitrary input rows into the document contract (schema.py) and reports
  every row it cannot use (with a reason naming shard and line/row) instead of failing.
* `read_documents` streams shards that are already in the contract (a stage's output).
* `ShardWriter` writes zstd Parquet that appears atomically (storage.atomic_open).

A shard that is truncated or corrupt anywhere raises `ShardUnreadable` naming the compressed
byte offset where the damage was found, with the rows decoded before it (and, for Parquet, the
rows the footer declares): compressed streams are checked to their very end (every zstd frame
and gzip member complete, nothing but zero padding after the last), Parquet row groups are read
one by one against the footer's row counts and page checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard
from pydantic import Field

from mixforge import schema as S
from mixforge.storage import SHARD_SUFFIXES, atomic_open, filesystem, is_local, write_bytes
from mixforge.strict import StrictModel

PARQUET_COMPRESSION = "zstd"
REJECT_PREVIEW_CHARS = 4096  # text kept in the audit for rows that could not be used
# A reader's rejected rows: the document as far as it could be read, why, and where (drop_row: the row from 0
# or the JSONL line from 1, as the RawBatch's unit says); the runner completes the other drop columns.
REJECT_SCHEMA = pa.schema(
    list(S.CORE_SCHEMA)
    + [pa.field(S.DROP_REASON, pa.string()), pa.field(S.DROP_DETAIL, pa.string()), pa.field(S.DROP_ROW, pa.int64())]
)
DUPLICATE_ID = "duplicate_id"  # drop reason: an input id already used earlier in the same shard
_READ_CHUNK = 1 << 14  # compressed bytes per read: also the precision of "detected by byte N"
_ID_PREVIEW_CHARS = 200  # an id quoted in a drop detail is cut here (ids can be hostile)

_MISSING = object()


class ShardUnreadable(Exception):
    """The shard as a whole cannot be read (missing, truncated, corrupt); it is quarantined.

    `rows_decoded`: rows read before the error (a lower bound of what the shard holds);
    `rows_declared`: rows the shard says it holds (a Parquet footer), None when unknown.
    """

    def __init__(self, message: str, rows_decoded: int | None = None, rows_declared: int | None = None) -> None:
        super().__init__(message)
        self.rows_decoded = rows_decoded
        self.rows_declared = rows_declared

    def __reduce__(self):  # keep the counts when pickled (Ray)
        return (type(self), (str(self), self.rows_decoded, self.rows_declared))


class ReadConfig(StrictModel):
    """How raw input rows are read into the document contract (the config's `read:` section, and
    every reader's options: one model for both)."""

    text_field: str = Field("text", description="Input field holding the document text.")
    id_field: str = Field("id", description="Input field holding a unique id; derived when absent.")
    source: str | None = Field(
        None, description="Source name for rows without a `source` field (default: the shard's file name)."
    )
    batch_rows: int = Field(4096, ge=1, description="Rows per Arrow batch.")
    batch_bytes: int = Field(32 << 20, ge=1 << 10, description="Approximate bytes per Arrow batch.")
    max_doc_bytes: int = Field(
        8 << 20, ge=1, description="Documents larger than this (UTF-8 bytes) are dropped as `oversized`."
    )


@dataclass
class RawBatch:
    docs: pa.Table  # CORE_SCHEMA
    rejects: pa.Table  # REJECT_SCHEMA
    # Where each row of `docs` is in the shard: JSONL line numbers (from 1) or Parquet row
    # numbers (from 0), named by `unit`; drop details of later steps quote them.
    positions: pa.Array | None = None
    unit: str = "row"


@dataclass
class _Progress:
    """How far a read got: what ShardUnreadable reports when the shard breaks."""

    rows: int = 0  # rows decoded (documents and rejected rows alike)
    declared: int | None = None  # rows the shard declares (a Parquet footer)


def shard_format(uri: str) -> str:
    name = uri.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(SHARD_SUFFIXES):  # every other shard suffix is JSON lines, plain or compressed
        return "jsonl"
    raise ShardUnreadable(f"{uri}: unknown shard format (expected .parquet, .jsonl, .jsonl.gz or .jsonl.zst)", 0)


def shard_stem(uri: str) -> str:
    base = os.path.basename(uri.rstrip("/"))
    lower = base.lower()
    for suffix in SHARD_SUFFIXES:
        if lower.endswith(suffix):
            return base[: -len(suffix)]
    return base


@contextlib.contextmanager
def _open_shard(uri: str, storage_options: Mapping[str, Any] | None):
    """Open a shard for streaming reads, decompressing .gz/.zst on the fly (with readline)."""
    try:
        fs, path = filesystem(uri, storage_options)
        raw = fs.open(path, "rb")
    except FileNotFoundError as e:
        raise ShardUnreadable(f"{uri}: file not found", 0) from e
    suffix = path.lower()
    with raw:
        if suffix.endswith(".gz"):
            with io.BufferedReader(_GzipStream(raw, uri), buffer_size=1 << 20) as f:
                yield f
        elif suffix.endswith(".zst"):
            with io.BufferedReader(_ZstdStream(raw, uri), buffer_size=1 << 20) as f:
                yield f
        elif is_local(fs):
            yield raw
        else:  # fsspec's remote files have no readline(size): buffer them
            yield io.BufferedReader(raw, buffer_size=1 << 20)


def _wrap_read_errors(uri: str, it: Iterator, progress: _Progress) -> Iterator:
    """Turn low-level errors into ShardUnreadable carrying how far the read got."""
    try:
        yield from it
    except ShardUnreadable as e:
        if e.rows_decoded is None:
            e.rows_decoded = progress.rows
        if e.rows_declared is None:
            e.rows_declared = progress.declared
        raise
    except (OSError, EOFError, ValueError, pa.ArrowException, zstandard.ZstdError, zlib.error) as e:
        raise ShardUnreadable(f"{uri}: {type(e).__name__}: {e}", progress.rows, progress.declared) from e


# ----------------------------------------------------------------------------- compressed streams


class _CheckedStream(io.RawIOBase):
    """A decompressed view of a compressed file that never ends quietly: truncation, corruption
    and trailing bytes raise ShardUnreadable naming the compressed byte offset."""

    codec = ""

    def __init__(self, raw, uri: str) -> None:
        self._raw = raw
        self.uri = uri
        self.offset = 0  # compressed bytes read from the file so far

    def readable(self) -> bool:
        return True

    def _read_compressed(self, n: int = _READ_CHUNK) -> bytes:
        data = self._raw.read(n)
        self.offset += len(data)
        return data

    def _fail(self, what: str) -> ShardUnreadable:
        return ShardUnreadable(f"{self.uri}: {self.codec} stream {what}")


class _GzipStream(_CheckedStream):
    """gzip members one after another (as `cat a.gz b.gz` makes), each checked to its CRC and size
    trailer; zero padding after a member is accepted (as gzip tools do), anything else is not."""

    codec = "gzip"

    def __init__(self, raw, uri: str) -> None:
        super().__init__(raw, uri)
        self._member = None  # zlib decompressor of the member being read
        self._member_start = 0
        self._members = 0  # members begun; zero padding is accepted only after one
        self._input = b""  # compressed bytes read but not consumed; they end at self.offset

    def readinto(self, buf) -> int:
        if not len(buf):
            return 0
        while True:
            if self._member is not None and self._input:
                fed_to = self.offset
                try:
                    out = self._member.decompress(self._input, len(buf))
                except zlib.error as e:
                    raise self._fail(
                        f"is corrupt ({e}) in the member starting at compressed byte {self._member_start}, "
                        f"detected by compressed byte {fed_to}"
                    ) from e
                if self._member.eof:
                    self._input, self._member = self._member.unused_data, None
                else:
                    self._input = self._member.unconsumed_tail
                if out:
                    buf[: len(out)] = out
                    return len(out)
                continue
            if self._member is None and self._input:
                rest = self._input.lstrip(b"\0") if self._members else self._input
                self._input = rest
                if rest[:2] == b"\x1f\x8b":
                    self._member_start = self.offset - len(rest)
                    self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    self._members += 1
                    continue
                if len(rest) >= 2 or (rest and rest != b"\x1f"):
                    at = self.offset - len(rest)
                    raise self._fail(
                        f"has {'trailing ' if at else ''}bytes that are not gzip at compressed byte {at} "
                        f"(starting {rest[:8]!r})"
                    )
            data = self._read_compressed()
            if data:
                self._input += data
                continue
            if self._member is not None:
                raise self._fail(
                    f"is truncated: it ends at compressed byte {self.offset} inside the member starting at "
                    f"compressed byte {self._member_start}"
                )
            if self._input:
                raise self._fail(f"is truncated: it ends at compressed byte {self.offset} inside a member header")
            return 0


_ZSTD_MAGIC = 0xFD2FB528


class _ZstdFraming:
    """Walks the zstd framing (RFC 8878: frame header, block headers, checksum) over the compressed
    bytes as they stream by, so a cut-off frame or bytes that are no frame are found at their exact
    offset. zstandard's stream reader decodes (and checks block contents and checksums); on its own
    it ends quietly at a truncated frame."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.problem_at: int | None = None  # offset where the bytes that are no frame begin
        self.frame_start: int | None = None  # offset of the frame being walked; None between frames
        self.last_frame_start = 0
        self._state = "magic"
        self._need = 4
        self._header = bytearray()
        self._header_at = 0
        self._skip = 0  # payload bytes still to pass over
        self._checksum = False
        self._last_block = False

    def feed(self, data: bytes, at: int) -> int:
        """Walk `data`, the compressed bytes that start at offset `at`; returns how many of them
        belong to frames (all, unless bytes that are no frame begin inside)."""
        i, n = 0, len(data)
        while i < n and self.problem is None:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                if not self._skip:
                    self._after_payload()
                continue
            if not self._header:
                self._header_at = at + i
            k = min(self._need - len(self._header), n - i)
            self._header += data[i : i + k]
            i += k
            if len(self._header) == self._need:
                header = bytes(self._header)
                self._header.clear()
                self._parse(header)
        if self.problem_at is not None:
            return max(0, self.problem_at - at)
        return n

    def _parse(self, h: bytes) -> None:
        at = self._header_at
        if self._state == "magic":
            magic = int.from_bytes(h, "little")
            if magic == _ZSTD_MAGIC:
                self.frame_start = self.last_frame_start = at
                self._state, self._need = "descriptor", 1
            elif magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: 4-byte size, then payload
                self.frame_start = self.last_frame_start = at
                self._state, self._need = "skippable", 4
            else:
                what = "trailing bytes" if at else "bytes"
                self.problem = f"has {what} that are not a zstd frame at compressed byte {at} (starting {h!r})"
                self.problem_at = at
        elif self._state == "descriptor":
            d = h[0]
            if d & 0x08:
                self.problem = f"is corrupt: reserved bit set in the frame header at compressed byte {at}"
                return
            single_segment, fcs_flag = d >> 5 & 1, d >> 6
            self._checksum = bool(d & 0x04)
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[d & 0x03] + (single_segment, 2, 4, 8)[fcs_flag]
            if rest:
                self._state, self._need = "header", rest
            else:
                self._state, self._need = "block", 3
        elif self._state == "header":
            self._state, self._need = "block", 3
        elif self._state == "skippable":
            self._skip = int.from_bytes(h, "little")
            self._last_block, self._checksum = True, False
            self._state = "payload"
            if not self._skip:
                self._after_payload()
        elif self._state == "block":
            value = int.from_bytes(h, "little")
            self._last_block = bool(value & 1)
            block_type, size = value >> 1 & 3, value >> 3
            if block_type == 3:
                self.problem = f"is corrupt: reserved block type in the block header at compressed byte {at}"
                return
            self._skip = 1 if block_type == 1 else size  # an RLE block stores one byte
            self._state = "payload"
            if not self._skip:
                self._after_payload()
        elif self._state == "checksum":
            self._frame_done()

    def _after_payload(self) -> None:
        if not self._last_block:
            self._state, self._need = "block", 3
        elif self._checksum:
            self._state, self._need = "checksum", 4
        else:
            self._frame_done()

    def _frame_done(self) -> None:
        self.frame_start = None
        self._state, self._need = "magic", 4

    def end_problem(self, end: int) -> str | None:
        """What is wrong with the stream ending at offset `end` (None: it ended between frames)."""
        if self.problem:
            return self.problem
        if self._state == "magic" and not self._header:
            return None
        if self.frame_start is None:
            return f"is truncated: it ends at compressed byte {end} inside a frame's magic number"
        return (
            f"is truncated: it ends at compressed byte {end} "
            f"inside the frame starting at compressed byte {self.frame_start}"
        )


class _ZstdStream(_CheckedStream):
    codec = "zstd"

    class _Source:
        """What zstandard's reader reads from: the file, with the framing walked on the way."""

        def __init__(self, stream: _ZstdStream) -> None:
            self._stream = stream

        def read(self, n: int = -1) -> bytes:
            s = self._stream
            if s.framing.problem_at is not None:
                return b""  # the decoder finishes the frames before the bad bytes; readinto then reports them
            at = s.offset
            data = s._read_compressed(n if n and n > 0 else _READ_CHUNK)
            return data[: s.framing.feed(data, at)]

    def __init__(self, raw, uri: str) -> None:
        super().__init__(raw, uri)
        self.framing = _ZstdFraming()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._Source(self), read_size=_READ_CHUNK, read_across_frames=True, closefd=False
        )

    def readinto(self, buf) -> int:
        try:
            n = self._reader.readinto(buf)
        except zstandard.ZstdError as e:
            # Bytes that are no frame are named by the walker, at their exact offset.
            problem = self.framing.problem
            raise self._fail(
                f"{problem} (decoder: {e})"
                if problem
                else f"is corrupt ({e}), detected by compressed byte {self.offset} (in or before the frame "
                f"starting at compressed byte {self.framing.last_frame_start})"
            ) from e
        if n == 0:
            if self.framing.problem is None and self._read_compressed(1):
                raise self._fail(f"has bytes after its last frame at compressed byte {self.offset - 1}")
            problem = self.framing.end_problem(self.offset)
            if problem:
                raise self._fail(problem)
        return n


# ----------------------------------------------------------------------------- Parquet


def parquet_bytes(table: pa.Table, **options) -> bytes:
    """`table` as one Parquet file in memory; `options` go to `pq.write_table` as the caller gives them."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def write_parquet(uri: str, table: pa.Table, storage_options: Mapping[str, Any] | None = None, **options) -> None:
    """Write `table` to `uri` atomically (`options`: as `parquet_bytes`)."""
    write_bytes(uri, parquet_bytes(table, **options), storage_options)


def read_parquet(
    uri: str, storage_options: Mapping[str, Any] | None = None, columns: list[str] | None = None
) -> pa.Table:
    """A whole Parquet file (or `columns` of it) from any fsspec URI."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


@contextlib.contextmanager
def parquet_file(uri: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened on any fsspec URI, for footer reads and row-group reads (closed on exit)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        yield pq.ParquetFile(f)


def _open_parquet(uri: str, f) -> pq.ParquetFile:
    try:
        # Page checksums, where the writer stored them, catch corrupt pages that would decode.
        return pq.ParquetFile(f, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ShardUnreadable(
            f"{uri}: not a readable Parquet file: footer unreadable ({_footer_where(f)}): {e}", 0
        ) from e


def _footer_where(f) -> str:
    """Where a Parquet footer should be, for the error message."""
    try:
        size = f.seek(0, io.SEEK_END)
        if size < 12:
            return f"file of {size} bytes, too short for a Parquet file"
        f.seek(size - 8)
        tail = f.read(8)
        if tail[4:] != b"PAR1":
            return f"file of {size} bytes, no Parquet magic at compressed byte {size - 4}"
        length = int.from_bytes(tail[:4], "little")
        return f"file of {size} bytes, footer of {length} bytes at compressed byte {size - 8 - length}"
    except Exception:  # noqa: BLE001 - only the message depends on it
        return "footer position unknown"


def _row_group_bytes(md: pq.FileMetaData, group: int) -> str:
    rg = md.row_group(group)
    starts, ends = [], []
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = (
            col.dictionary_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset
            else col.data_page_offset
        )
        starts.append(start)
        ends.append(start + col.total_compressed_size)
    return f"compressed bytes {min(starts)}..{max(ends)}" if starts else "no columns"


def _parquet_batches(
    uri: str, pf: pq.ParquetFile, batch_rows: int, progress: _Progress, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """A Parquet file's rows, one row group at a time, each checked against the rows the footer declares."""
    md = pf.metadata
    progress.declared = md.num_rows
    for group in range(md.num_row_groups):
        declared, got = md.row_group(group).num_rows, 0
        try:
            for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns, use_threads=False):
                got += rb.num_rows
                progress.rows += rb.num_rows
                yield pa.Table.from_batches([rb])
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ShardUnreadable(
                f"{uri}: corrupt Parquet data in row group {group} ({_row_group_bytes(md, group)}): {e}"
            ) from e
        if got != declared:
            raise ShardUnreadable(
                f"{uri}: corrupt Parquet data in row group {group} ({_row_group_bytes(md, group)}): "
                f"the footer declares {declared} rows, {got} decoded"
            )


# ----------------------------------------------------------------------------- ids


class _KeyRuns:
    """A growing map of 64-bit keys to one int64 value each, kept as sorted numpy runs merged
    like a log-structured tree: 16 bytes a key, a binary search per run for each batch."""

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found, run, index) for each key."""
        found = np.zeros(len(keys), bool)
        run = np.full(len(keys), -1, np.int64)
        where = np.zeros(len(keys), np.int64)
        for r, run_keys in enumerate(self._keys):
            i = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = ~found & (run_keys[i] == keys)
            found |= hit
            run[hit], where[hit] = r, i[hit]
        return found, run, where

    def values(self, run: np.ndarray, where: np.ndarray) -> np.ndarray:
        out = np.zeros(len(run), np.int64)
        for r, run_values in enumerate(self._values):
            at = run == r
            out[at] = run_values[where[at]]
        return out

    def add_to(self, run: np.ndarray, where: np.ndarray, amounts: np.ndarray) -> None:
        for r, run_values in enumerate(self._values):
            at = run == r
            np.add.at(run_values, where[at], amounts[at])

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add keys not present yet (distinct among themselves)."""
        if not len(keys):
            return
        order = np.argsort(keys)
        self._keys.append(keys[order])
        self._values.append(values[order].astype(np.int64))
        while len(self._keys) > 1 and len(self._keys[-2]) <= len(self._keys[-1]):  # a binary counter: O(n log n)
            k = np.concatenate([self._keys.pop(-2), self._keys.pop()])
            v = np.concatenate([self._values.pop(-2), self._values.pop()])
            order = np.argsort(k, kind="stable")
            self._keys.append(k[order])
            self._values.append(v[order])


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each key: the index of its first occurrence in `keys`, and how many equal keys precede it."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.ones(n, bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    first, rank = np.empty(n, np.int64), np.empty(n, np.int64)
    first[order] = order[group_start]
    rank[order] = np.arange(n) - group_start
    return first, rank


class _ShardIds:
    """One shard's id bookkeeping, in memory bounded by 16 bytes a distinct key.

    * derived ids: source / shard tag / hash of the raw text - occurrence of that (source, text)
      in the shard, so exact copies keep distinct ids and two shards never derive the same id;
    * ids the input supplies: the first occurrence in the shard wins, later ones are dropped
      as `duplicate_id` (64-bit hashes of the ids are kept, not the ids).
    """

    def __init__(self, uri: str) -> None:
        self.tag = S.shard_tag(uri)
        self._occurrences = _KeyRuns()
        self._supplied = _KeyRuns()
        self._source_keys: dict[str, int] = {}

    def derive(self, sources: list[str], digests: list[str]) -> list[str]:
        """Ids for rows without one, in row order (`digests`: S.text_digest of each row's raw text)."""
        if not digests:
            return []
        keys = np.fromiter(
            (int(d, 16) ^ self._source_key(s) for s, d in zip(sources, digests)), np.uint64, len(digests)
        )
        first, rank = _groups(keys)
        found, run, where = self._occurrences.find(keys)
        occurrence = np.where(found, self._occurrences.values(run, where), 0) + rank
        leaders = first == np.arange(len(keys))
        sizes = np.bincount(first, minlength=len(keys))[leaders]
        self._occurrences.add_to(run[leaders & found], where[leaders & found], sizes[found[leaders]])
        self._occurrences.insert(keys[leaders & ~found], sizes[~found[leaders]])
        return [S.derive_id(s, d, int(o), self.tag) for s, d, o in zip(sources, digests, occurrence)]

    def _source_key(self, source: str) -> int:
        key = self._source_keys.get(source)
        if key is None:
            key = int.from_bytes(
                hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
            )
            self._source_keys[source] = key
        return key

    def earlier_positions(self, ids: pa.Array, positions: np.ndarray) -> np.ndarray:
        """For each supplied id (null: none), the position of an earlier row of the shard with the same id, else -1."""
        out = np.full(len(ids), -1, np.int64)
        given = np.asarray(pc.is_valid(ids).to_numpy(zero_copy_only=False), bool)
        if not given.any():
            return out
        keys = pl.Series(ids.filter(pa.array(given))).hash(seed=0).to_numpy().astype(np.uint64)
        pos = positions[given]
        first, rank = _groups(keys)
        found, run, where = self._supplied.find(keys)
        earlier = np.where(found, self._supplied.values(run, where), np.where(rank > 0, pos[first], -1))
        new = ~found & (rank == 0)
        self._supplied.insert(keys[new], pos[new])
        out[given] = earlier
        return out


def _split_repeated_ids(
    uri: str, unit: str, docs: pa.Table, supplied: np.ndarray, positions: np.ndarray, ids: _ShardIds
) -> tuple[pa.Table, np.ndarray, pa.Table | None]:
    """Drop rows whose input-supplied id an earlier row of the shard already used."""
    supplied_ids = pc.if_else(pa.array(supplied), docs.column(S.ID).combine_chunks(), pa.scalar(None, pa.string()))
    earlier = ids.earlier_positions(supplied_ids, positions)
    repeated = earlier >= 0
    if not repeated.any():
        return docs, positions, None
    mask = pa.array(repeated)
    dropped = docs.filter(mask)
    details = [
        f"{uri} {unit} {p}: id {_quote_id(i)} already used at {unit} {e}"
        for p, e, i in zip(positions[repeated], earlier[repeated], dropped.column(S.ID).to_pylist())
    ]
    dropped = (
        dropped.append_column(S.DROP_REASON, pa.array([DUPLICATE_ID] * len(details), pa.string()))
        .append_column(S.DROP_DETAIL, pa.array(details, pa.string()))
        .append_column(S.DROP_ROW, pa.array(positions[repeated], pa.int64()))
    )
    return docs.filter(pc.invert(mask)), positions[~repeated], dropped


def _quote_id(value: str) -> str:
    return repr(value if len(value) <= _ID_PREVIEW_CHARS else value[:_ID_PREVIEW_CHARS] + "…")


# ----------------------------------------------------------------------------- raw input


def read_raw(
    uri: str, options: ReadConfig = ReadConfig(), storage_options: Mapping[str, Any] | None = None
) -> Iterator[RawBatch]:
    """Stream a raw input shard as contract documents plus rejected rows.

    Raises ShardUnreadable when the shard itself cannot be read; rows already yielded
    are then discarded by the caller (the shard is quarantined whole).
    """
    source = options.source or shard_stem(uri)
    progress = _Progress()
    reader = _read_raw_jsonl if shard_format(uri) == "jsonl" else _read_raw_parquet
    return _wrap_read_errors(uri, reader(uri, options, source, storage_options, progress), progress)


@dataclass
class _JsonlBatch:
    """Column builders for one batch of JSONL rows."""

    ids: list = field(default_factory=list)  # the input's id as a string, or None: derive one
    digests: list = field(default_factory=list)  # S.text_digest of the raw text, for rows without an id
    texts: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    urls: list = field(default_factory=list)
    metas: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    nbytes: int = 0
    # rejected rows: digest of the raw line, text preview, reason, detail, line number
    bad_digests: list = field(default_factory=list)
    bad_texts: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    details: list = field(default_factory=list)
    bad_lines: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts) + len(self.bad_texts)

    def finish(self, uri: str, default_source: str, ids: _ShardIds) -> RawBatch:
        derived = iter(
            ids.derive(
                [s for s, i in zip(self.sources, self.ids) if i is None],
                [d for d, i in zip(self.digests, self.ids) if i is None],
            )
        )
        supplied = np.array([i is not None for i in self.ids], bool)
        doc_ids = [i if i is not None else next(derived) for i in self.ids]
        docs = pa.Table.from_arrays(
            [
                pa.array(c, type=f.type)
                for c, f in zip((doc_ids, self.texts, self.sources, self.urls, self.metas), S.CORE_SCHEMA)
            ],
            schema=S.CORE_SCHEMA,
        )
        positions = np.array(self.lines, np.int64)
        docs, positions, repeated = _split_repeated_ids(uri, "line", docs, supplied, positions, ids)
        n = len(self.bad_texts)
        rejects = pa.Table.from_arrays(
            [
                pa.array(ids.derive([default_source] * n, self.bad_digests), pa.string()),
                pa.array(self.bad_texts, pa.string()),
                pa.array([default_source] * n, pa.string()),
                pa.nulls(n, pa.string()),
                pa.nulls(n, pa.string()),
                pa.array(self.reasons, pa.string()),
                pa.array(self.details, pa.string()),
                pa.array(self.bad_lines, pa.int64()),
            ],
            schema=REJECT_SCHEMA,
        )
        if repeated is not None:
            rejects = pa.concat_tables([rejects, repeated])
        return RawBatch(docs, rejects, pa.array(positions, pa.int64()), "line")


_UTF16_32_BOMS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\xff\xfe", b"\xfe\xff")


def _read_raw_jsonl(
    uri: str, opt: ReadConfig, default_source: str, storage_options, progress: _Progress
) -> Iterator[RawBatch]:
    ids = _ShardIds(uri)
    line_cap = 2 * opt.max_doc_bytes + 4096  # a JSON line can be at most ~2x its text (escapes)
    with _open_shard(uri, storage_options) as f:
        batch = _JsonlBatch()
        lineno = 0

        def reject(reason: str, detail: str, text: str | None, raw: bytes) -> None:
            batch.bad_digests.append(S.text_digest(raw))
            batch.bad_texts.append(text[:REJECT_PREVIEW_CHARS] if text else None)
            batch.reasons.append(reason)
            batch.details.append(f"{uri} line {lineno}: {detail}")
            batch.bad_lines.append(lineno)

        while True:
            line = f.readline(line_cap)
            if not line:
                break
            lineno += 1
            if lineno == 1:
                if line.startswith(_UTF16_32_BOMS):
                    raise ShardUnreadable(
                        f"{uri}: starts with a UTF-16/UTF-32 byte-order mark ({line[:4]!r} at byte 0): "
                        "JSONL shards must be UTF-8 (convert it, e.g. iconv -f UTF-16 -t UTF-8)",
                        0,
                    )
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is no part of the first row
            if len(line) >= line_cap and not line.endswith(b"\n"):
                # Oversized: skip the rest of the line in bounded chunks, never hold it whole.
                size = len(line)
                while (chunk := f.readline(line_cap)) and not chunk.endswith(b"\n"):
                    size += len(chunk)
                size += len(chunk)
                progress.rows += 1
                reject(
                    "oversized",
                    f"line of {size} bytes exceeds max_doc_bytes={opt.max_doc_bytes}",
                    line[:REJECT_PREVIEW_CHARS].decode("utf-8", "replace"),
                    line[:65536],
                )
                continue
            if not line.strip():
                continue  # blank lines are not documents
            progress.rows += 1
            _parse_jsonl_row(uri, line, lineno, opt, default_source, batch, reject)
            if len(batch) >= opt.batch_rows or batch.nbytes >= opt.batch_bytes:
                yield batch.finish(uri, default_source, ids)
                batch = _JsonlBatch()
        yield batch.finish(uri, default_source, ids)


def _parse_jsonl_row(
    uri: str, line: bytes, lineno: int, opt: ReadConfig, default_source: str, batch: _JsonlBatch, reject
) -> None:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as e:
        reject("invalid_utf8", f"invalid UTF-8 at byte {e.start}", line.decode("utf-8", "replace"), line)
        return
    try:
        obj = orjson.loads(decoded)
    except orjson.JSONDecodeError as e:
        if "surrogate" in str(e):  # "\ud800" escaped: valid JSON syntax, but no Unicode text
            reject("invalid_utf8", f"lone surrogate escape, not valid Unicode ({e})", decoded, line)
        else:
            reject("invalid_json", f"not valid JSON ({e})", decoded, line)
        return
    if not isinstance(obj, dict):
        reject("invalid_json", f"expected a JSON object, got {type(obj).__name__}", decoded, line)
        return
    text = obj.pop(opt.text_field, _MISSING)
    if text is _MISSING or text is None:
        what = f"no {opt.text_field!r} field" if text is _MISSING else f"{opt.text_field!r} is null"
        reject("missing_text", what, decoded, line)
        return
    if not isinstance(text, str):
        reject("text_not_string", f"field {opt.text_field!r} is {type(text).__name__}, not a string", decoded, line)
        return
    raw = text.encode("utf-8")
    if len(raw) > opt.max_doc_bytes:
        reject("oversized", f"text of {len(raw)} bytes exceeds max_doc_bytes={opt.max_doc_bytes}", text, raw)
        return
    # Fields that cannot fill their column stay in `meta` under their own name: nothing is lost.
    meta_back = {}
    source = obj.pop(S.SOURCE, None)
    if not (isinstance(source, str) and source):
        if source is not None and source != "":
            meta_back[S.SOURCE] = source
        source = default_source
    doc_id = obj.pop(opt.id_field, _MISSING)
    if isinstance(doc_id, str) and doc_id or isinstance(doc_id, int) and not isinstance(doc_id, bool):
        batch.ids.append(str(doc_id))
        batch.digests.append(None)
    else:
        if doc_id is not _MISSING and doc_id != "":
            meta_back[opt.id_field] = doc_id  # float, bool, list, object, null
        batch.ids.append(None)
        batch.digests.append(S.text_digest(raw))
    url = obj.pop(S.URL, None)
    if url is not None and not isinstance(url, str):
        meta_back[S.URL] = url
        url = None
    obj.update(meta_back)
    batch.texts.append(text)
    batch.sources.append(source)
    batch.urls.append(url)
    batch.metas.append(orjson.dumps(obj).decode() if obj else None)
    batch.lines.append(lineno)
    batch.nbytes += len(line)


def _read_raw_parquet(
    uri: str, opt: ReadConfig, default_source: str, storage_options, progress: _Progress
) -> Iterator[RawBatch]:
    ids = _ShardIds(uri)
    with _open_shard(uri, storage_options) as f:
        pf = _open_parquet(uri, f)
        # Rows per batch bounded by bytes too: estimate from the file's average row size.
        md = pf.metadata
        avg_row = (
            (sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)) / md.num_rows)
            if md.num_rows
            else 1
        )
        batch_rows = max(1, min(opt.batch_rows, int(opt.batch_bytes / max(avg_row, 1))))
        first_row = 0
        for table in _parquet_batches(uri, pf, batch_rows, progress):
            yield _raw_table_to_docs(uri, table, first_row, opt, default_source, ids)
            first_row += table.num_rows
        if md.num_rows == 0:
            yield RawBatch(S.CORE_SCHEMA.empty_table(), REJECT_SCHEMA.empty_table(), pa.array([], pa.int64()), "row")


def _raw_table_to_docs(
    uri: str, table: pa.Table, first_row: int, opt: ReadConfig, default_source: str, ids: _ShardIds
) -> RawBatch:
    """Vectorised validation and normalisation of one raw Parquet batch into the contract."""
    n = table.num_rows
    names = table.column_names
    row_numbers = np.arange(first_row, first_row + n, dtype=np.int64)

    # --- text: present, string, valid UTF-8, bounded size
    reason = pa.nulls(n, pa.string())
    detail = pa.nulls(n, pa.string())
    if opt.text_field not in names:
        text = pa.nulls(n, pa.string())
        reason = pa.array(["missing_text"] * n, pa.string())
        detail = pa.array([f"no {opt.text_field!r} column"] * n, pa.string())
    else:
        text = table.column(opt.text_field).combine_chunks()
        if _is_stringish(text.type):
            text = text.cast(pa.string())
        elif (
            pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type) or pa.types.is_binary_view(text.type)
        ):
            text, bad_utf8 = _decode_binary(text)
            reason = pc.if_else(bad_utf8, "invalid_utf8", reason)
            detail = pc.if_else(bad_utf8, "invalid UTF-8", detail)
        else:
            reason = pa.array(["text_not_string"] * n, pa.string())
            detail = pa.array([f"column {opt.text_field!r} has type {text.type}, not string"] * n, pa.string())
            text = pa.nulls(n, pa.string())
        size = pc.binary_length(text)
        oversized = pc.fill_null(pc.greater(size, opt.max_doc_bytes), False)
        reason = pc.if_else(pc.and_(pc.is_null(reason), oversized), "oversized", reason)
        detail = pc.if_else(
            pc.and_(pc.is_null(detail), oversized),
            pc.binary_join_element_wise(
                "text of ", pc.cast(size, pa.string()), f" bytes exceeds max_doc_bytes={opt.max_doc_bytes}", ""
            ),
            detail,
        )
        missing = pc.and_(pc.is_null(reason), pc.is_null(text))
        reason = pc.if_else(missing, "missing_text", reason)
        detail = pc.if_else(missing, f"{opt.text_field!r} is null", detail)

    # --- source, url, id: a column of a type that cannot fill its contract column stays in meta
    source_ok = S.SOURCE in names and _is_stringish(table.schema.field(S.SOURCE).type)
    if source_ok:
        source = table.column(S.SOURCE).cast(pa.string()).combine_chunks()
        source = pc.fill_null(pc.if_else(pc.equal(source, ""), pa.scalar(None, pa.string()), source), default_source)
    else:
        source = pa.array([default_source] * n, pa.string())
    url_ok = S.URL in names and _castable_to_string(table.schema.field(S.URL).type)
    url = table.column(S.URL).cast(pa.string()).combine_chunks() if url_ok else pa.nulls(n, pa.string())
    id_ok = opt.id_field in names and _castable_to_string(table.schema.field(opt.id_field).type)
    used = (
        {opt.text_field}
        | ({S.SOURCE} if source_ok else set())
        | ({S.URL} if url_ok else set())
        | ({opt.id_field} if id_ok else set())
    )
    meta_cols = [c for c in names if c not in used]
    meta = _json_objects(table.select(meta_cols)) if meta_cols else pa.nulls(n, pa.string())

    # --- ids: given (cast to string) or derived from source + shard + raw text hash + occurrence
    given = table.column(opt.id_field).cast(pa.string()).combine_chunks() if id_ok else pa.nulls(n, pa.string())
    given = pc.if_else(pc.equal(given, ""), pa.scalar(None, pa.string()), given)
    supplied = np.asarray(pc.is_valid(given).to_numpy(zero_copy_only=False), bool)
    if given.null_count:
        missing_id = pc.invert(pc.is_valid(given))
        sources = source.filter(missing_id).to_pylist()
        digests = [S.text_digest((t or "").encode("utf-8")) for t in text.filter(missing_id).to_pylist()]
        ids_arr = pc.replace_with_mask(given, missing_id, pa.array(ids.derive(sources, digests), pa.string()))
    else:
        ids_arr = given

    docs = pa.Table.from_arrays([ids_arr, text, source, url, meta], schema=S.CORE_SCHEMA)
    bad = pc.is_valid(reason)
    rejected = None
    if pc.any(bad).as_py():
        good = pc.invert(bad)
        rejected = docs.filter(bad)
        bad_rows = pa.array(row_numbers, pa.int64()).filter(bad)
        where = pc.binary_join_element_wise(
            f"{uri} row ", pc.cast(bad_rows, pa.string()), ": ", detail.filter(bad), ""
        )
        preview = pc.utf8_slice_codeunits(rejected.column(S.TEXT), 0, REJECT_PREVIEW_CHARS)
        rejected = (
            rejected.set_column(1, S.TEXT, preview)
            .append_column(S.DROP_REASON, reason.filter(bad))
            .append_column(S.DROP_DETAIL, where)
            .append_column(S.DROP_ROW, bad_rows)
        )
        keep = np.asarray(good.to_numpy(zero_copy_only=False), bool)
        docs, supplied, row_numbers = docs.filter(good), supplied[keep], row_numbers[keep]
    docs, row_numbers, repeated = _split_repeated_ids(uri, "row", docs, supplied, row_numbers, ids)
    parts = [t for t in (rejected, repeated) if t is not None]
    rejects = pa.concat_tables(parts) if parts else REJECT_SCHEMA.empty_table()
    return RawBatch(docs, rejects, pa.array(row_numbers, pa.int64()), "row")


def _is_stringish(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_stringish(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _castable_to_string(t: pa.DataType) -> bool:
    """Types whose values are ids/URLs as they are: strings and integers (not booleans, floats, nested)."""
    if pa.types.is_dictionary(t):
        return _castable_to_string(t.value_type)
    return _is_stringish(t) or pa.types.is_integer(t)


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


def _has_binary(t: pa.DataType) -> bool:
    if (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return True
    if pa.types.is_dictionary(t):
        return _has_binary(t.value_type)
    return any(_has_binary(t.field(i).type) for i in range(t.num_fields))


def _json_objects(table: pa.Table) -> pa.Array:
    """Encode each row of `table` as a JSON object string (vectorised through Polars).

    Polars cannot write binary to JSON: top-level binary columns become base64 strings; binary
    nested in other types goes through a per-row Python encoding (rare)."""
    if any(_has_binary(f.type) and not _is_flat_binary(f.type) for f in table.schema):
        return _json_objects_by_row(table)
    df = pl.from_arrow(table)
    binary = [c for c, f in zip(table.column_names, table.schema) if _is_flat_binary(f.type)]
    if binary:
        df = df.with_columns(pl.col(c).cast(pl.Binary).bin.encode("base64") for c in binary)
    try:
        encoded = df.select(pl.struct(pl.all()).struct.json_encode().alias("m")).to_series().to_arrow()
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException):
        return _json_objects_by_row(table)
    return encoded.cast(pa.string())


def _is_flat_binary(t: pa.DataType) -> bool:
    return _has_binary(t) and not (pa.types.is_nested(t) or pa.types.is_dictionary(t))


def _json_objects_by_row(table: pa.Table) -> pa.Array:
    import base64

    def default(value):
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        return str(value)  # Decimal, timedelta, ...

    return pa.array(
        [orjson.dumps(row, default=default, option=orjson.OPT_NON_STR_KEYS).decode() for row in table.to_pylist()],
        pa.string(),
    )


# ----------------------------------------------------------------------------- contract input


def read_documents(
    uri: str,
    batch_rows: int = 8192,
    columns: list[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[pa.Table]:
    """Stream a contract shard (a stage's output) as Arrow tables."""
    progress = _Progress()

    def gen():
        with _open_shard(uri, storage_options) as f:
            pf = _open_parquet(uri, f)
            if pf.metadata.num_rows == 0:
                progress.declared = 0
                yield (
                    pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
                )
                return
            yield from _parquet_batches(uri, pf, batch_rows, progress, columns)

    return _wrap_read_errors(uri, gen(), progress)


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes one Parquet shard (zstd) that appears atomically when closed.

    Batches are buffered into row groups of about `row_group_bytes`; the schema is fixed by
    the first batch (later batches are cast to it). An empty shard still gets a valid file
    with `empty_schema`, so outputs stay 1:1 with inputs.
    """

    def __init__(
        self,
        uri: str,
        empty_schema: pa.Schema = S.CORE_SCHEMA,
        storage_options: Mapping[str, Any] | None = None,
        row_group_bytes: int = 32 << 20,
    ) -> None:
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
        # Page checksums: a later stage reading this shard detects a corrupt page instead of decoding it.
        self._writer = pq.ParquetWriter(
            self._ctx.__enter__(), schema, compression=PARQUET_COMPRESSION, write_page_checksum=True
        )

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
