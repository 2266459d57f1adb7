"""A corpus of broken shards, with the generator's own record of every row it wrote.

`generate(root)` writes one or more shards for each *kind* of bad input (truncated and corrupt
codecs, encodings, wrong types, hostile ids, odd file names, ...) and returns a `Corpus` that
says, for every row written, what must become of it:

* `kept`: it leaves normalize as a document (optionally with its id, source and meta checked);
* a drop reason (`invalid_json`, `duplicate_id`, `empty_text`, ...): it is in `_removed/` with
  that reason and a detail naming its shard and line/row;
* `quarantined`: its shard cannot be read; the quarantine ledger names the shard.

Ids supplied by the input are unique across shards here (the cross-shard rule is mixforge.ids'
and its tests'); within a shard they repeat on purpose. Every row carries a tag (`bi007r0003`:
kind 7, row 3) in a `tag` field and at the start of its text, so it can be found in kept shards
(in `meta`) and in `_removed/` (in `meta`, or in the text preview of a row the reader could not
parse). The tests compare what the pipeline did with
this record, not only with the runner's own counters.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.helpers import prose

KEPT, QUARANTINED = "kept", "quarantined"
TAG_PATTERN = re.compile(r"bi\d{3}r\d{4}")
MAX_DOC_BYTES = 64 << 10  # read.max_doc_bytes for the suite: oversized rows stay small
ROWS = 24  # rows per ordinary shard


@dataclass
class Row:
    tag: str
    outcome: str  # KEPT, a drop reason, or QUARANTINED
    position: int | None = None  # JSONL line (from 1) or Parquet row (from 0) where the reader meets it
    id: str | None = None  # expected id of a kept row (None: not checked)
    derived_id: bool = False  # the id must be derived (source/shard tag/digest-occurrence)
    source: str | None = None  # expected source of a kept row (None: not checked)
    meta: dict | None = None  # items the kept row's meta must hold
    dropped_by: str | None = None  # a row normalize keeps that a later stage ("filter") must drop


@dataclass
class Shard:
    kind: str
    path: str
    rows: list[Row]
    unit: str = "line"  # how drop details name a row: "line" (JSONL) or "row" (Parquet)
    error: str | None = None  # quarantined: a regex the error must match (it names the shard too)
    rows_declared: int | None = None  # quarantined: what the ledger must say the shard declares

    @property
    def quarantined(self) -> bool:
        return self.error is not None


@dataclass
class Corpus:
    root: str
    shards: list[Shard] = field(default_factory=list)
    copy_groups: list[list[str]] = field(default_factory=list)  # tags of exact copies across shards (dedup)

    @property
    def kinds(self) -> list[str]:
        return sorted({s.kind for s in self.shards})

    @property
    def rows(self) -> list[Row]:
        return [r for s in self.shards for r in s.rows]

    def outcomes(self) -> Counter:
        return Counter(r.outcome for r in self.rows)

    def by_tag(self) -> dict[str, tuple[Shard, Row]]:
        return {r.tag: (s, r) for s in self.shards for r in s.rows}


class _Kinds:
    """Numbers kinds and their rows; builds the JSON records the generator writes."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.number = -1
        self.kind = ""
        self.count = 0

    def start(self, kind: str) -> None:
        self.number += 1
        self.kind = kind
        self.count = 0

    def tag(self) -> str:
        self.count += 1
        return f"bi{self.number:03d}r{self.count - 1:04d}"

    def record(self, tag: str | None = None, sentences: int = 8, **fields) -> dict:
        """A JSON row: `tag` first (so even a cut line shows it), then text (prose) and `fields`."""
        tag = tag or self.tag()
        row = {"tag": tag, "text": f"{tag} {prose(int(tag[2:5]) * 1000 + int(tag[6:]), sentences)}"}
        row.update(fields)
        return row

    def path(self, name: str) -> str:
        return os.path.join(self.corpus.root, name)

    def add(self, path: str, rows: list[Row], **kw) -> Shard:
        shard = Shard(self.kind, path, rows, **kw)
        self.corpus.shards.append(shard)
        return shard


def _jsonl(records: list) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records
    )


def _parquet(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size, write_page_checksum=True)
    return buf.getvalue().to_pybytes()


def _write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _kept_rows(records: list[dict], first: int = 1) -> list[Row]:
    return [Row(r["tag"], KEPT, first + i) for i, r in enumerate(records)]


def generate(root: str) -> Corpus:
    corpus = Corpus(root)
    k = _Kinds(corpus)
    _codecs(k)
    _empty_and_zero_rows(k)
    _encodings(k)
    _types_and_fields(k)
    _sizes(k)
    _ids(k)
    _parquet_drift(k)
    _names(k)
    _exact_copies(k)
    _low_quality(k)
    return corpus


# ----------------------------------------------------------------------------- codecs


def _quarantined(records: list[dict]) -> list[Row]:
    return [Row(r["tag"], QUARANTINED) for r in records]


def _codecs(k: _Kinds) -> None:
    compress = {
        "gzip": (".jsonl.gz", lambda d: gzip.compress(d, 6)),
        "zstd": (".jsonl.zst", lambda d: zstandard.ZstdCompressor(write_checksum=True).compress(d)),
    }
    for codec, (suffix, pack) in compress.items():
        for percent in (10, 50, 99):
            k.start(f"{codec}-truncated-{percent}")
            records = [k.record() for _ in range(ROWS)]
            data = pack(_jsonl(records))
            k.add(
                _write(k.path(f"{codec}-cut{percent}{suffix}"), data[: len(data) * percent // 100]),
                _quarantined(records),
                error=rf"truncated: it ends at compressed byte {len(data) * percent // 100}\b",
            )
        k.start(f"{codec}-trailing-garbage")
        records = [k.record() for _ in range(ROWS)]
        data = pack(_jsonl(records))
        k.add(
            _write(k.path(f"{codec}-garbage{suffix}"), data + b"GARBAGE!"),
            _quarantined(records),
            error=rf"trailing bytes that are not .* at compressed byte {len(data)}\b",
        )
        k.start(f"{codec}-corrupt-mid-stream")
        records = [k.record() for _ in range(ROWS)]
        data = bytearray(pack(_jsonl(records)))
        data[len(data) // 2] ^= 0xFF  # caught by the deflate structure / CRC, or zstd's block checks / checksum
        k.add(
            _write(k.path(f"{codec}-corrupt{suffix}"), bytes(data)),
            _quarantined(records),
            error=r"compressed byte \d+",
        )
        k.start(f"{codec}-concatenated")  # members/frames one after another: valid, every row kept
        a, b = [k.record() for _ in range(ROWS // 2)], [k.record() for _ in range(ROWS // 2)]
        k.add(_write(k.path(f"{codec}-concat{suffix}"), pack(_jsonl(a)) + pack(_jsonl(b))), _kept_rows(a + b))

    k.start("gzip-zero-padding")  # zero bytes after the last member, as tape tools write: accepted
    records = [k.record() for _ in range(ROWS)]
    k.add(_write(k.path("gzip-padded.jsonl.gz"), gzip.compress(_jsonl(records)) + b"\0" * 512), _kept_rows(records))

    table_rows = lambda n: [k.record(id=None) for _ in range(n)]  # noqa: E731
    for percent in (10, 50, 99):
        k.start(f"parquet-truncated-{percent}")
        records = table_rows(ROWS)
        data = _parquet(pa.Table.from_pylist(records))
        k.add(
            _write(k.path(f"parquet-cut{percent}.parquet"), data[: len(data) * percent // 100]),
            _quarantined(records),
            error=r"footer unreadable .*compressed byte \d+",
        )
    k.start("parquet-trailing-garbage")
    records = table_rows(ROWS)
    k.add(
        _write(k.path("parquet-garbage.parquet"), _parquet(pa.Table.from_pylist(records)) + b"GARBAGE!"),
        _quarantined(records),
        error=r"footer unreadable .*no Parquet magic at compressed byte \d+",
    )
    k.start("parquet-corrupt-footer")
    records = table_rows(ROWS)
    data = bytearray(_parquet(pa.Table.from_pylist(records)))
    footer_length = int.from_bytes(data[-8:-4], "little")
    data[-8 - footer_length : -8] = b"\xff" * footer_length  # the magic is intact, the footer is not
    k.add(
        _write(k.path("parquet-bad-footer.parquet"), bytes(data)),
        _quarantined(records),
        error=r"footer unreadable .*footer of \d+ bytes at compressed byte \d+",
    )
    k.start("parquet-corrupt-page")  # three row groups; the second one's page is damaged: the footer still counts
    records = table_rows(30)
    data = bytearray(_parquet(pa.Table.from_pylist(records), row_group_size=10))
    column = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(1)  # `text`
    # Inside the dictionary page's data, past its header (page headers hold statistics that no
    # checksum covers, and that reading never uses).
    at = column.dictionary_page_offset + 64
    data[at : at + 8] = bytes(b ^ 0x5A for b in data[at : at + 8])
    k.add(
        _write(k.path("parquet-bad-page.parquet"), bytes(data)),
        _quarantined(records),
        error=r"row group 1 \(compressed bytes \d+\.\.\d+\)",
        rows_declared=30,
    )


# ----------------------------------------------------------------------------- empty


def _empty_and_zero_rows(k: _Kinds) -> None:
    k.start("empty-file-jsonl")
    k.add(_write(k.path("empty.jsonl"), b""), [])
    k.start("empty-file-compressed")  # 0 bytes named .gz / .zst: no members, no rows
    k.add(_write(k.path("empty.jsonl.gz"), b""), [])
    k.add(_write(k.path("empty.jsonl.zst"), b""), [])
    k.start("empty-file-parquet")  # 0 bytes named .parquet: not a Parquet file
    k.add(_write(k.path("empty.parquet"), b""), [], error=r"footer unreadable \(file of 0 bytes")
    k.start("zero-row-shards")
    k.add(_write(k.path("zero-rows.parquet"), _parquet(pa.table({"text": pa.array([], pa.string())}))), [], unit="row")
    k.add(_write(k.path("zero-rows.jsonl.gz"), gzip.compress(b"")), [])
    k.add(_write(k.path("zero-rows.jsonl.zst"), zstandard.ZstdCompressor().compress(b"")), [])
    k.start("blank-lines-only")  # blank lines are not documents
    k.add(_write(k.path("blank-lines.jsonl"), b"\n\n  \n\t\n\r\n"), [])


# ----------------------------------------------------------------------------- encodings


def _encodings(k: _Kinds) -> None:
    k.start("utf8-bom")
    records = [k.record() for _ in range(ROWS)]
    k.add(_write(k.path("bom.jsonl"), b"\xef\xbb\xbf" + _jsonl(records)), _kept_rows(records))
    k.start("utf16-file")
    records = [k.record() for _ in range(ROWS)]
    k.add(
        _write(k.path("utf16.jsonl"), _jsonl(records).decode().encode("utf-16")),
        _quarantined(records),
        error=r"UTF-16/UTF-32 byte-order mark .* must be UTF-8",
    )

    k.start("invalid-utf8")
    good = [k.record() for _ in range(4)]
    bad = [k.record() for _ in range(3)]
    lines = [
        good[0],
        json.dumps(bad[0]).encode()[:-2] + b'\xff\xfe"}',
        good[1],
        json.dumps(bad[1]).encode().replace(b" ", b" \xc3\x28 ", 1),
        good[2],
        json.dumps(bad[2]).encode().replace(b" ", b" \xed\xa0\x80 ", 1),
        good[3],
    ]  # \xed\xa0\x80: an encoded surrogate
    k.add(
        _write(k.path("invalid-utf8.jsonl"), _jsonl(lines)),
        [
            Row(good[0]["tag"], KEPT, 1),
            Row(bad[0]["tag"], "invalid_utf8", 2),
            Row(good[1]["tag"], KEPT, 3),
            Row(bad[1]["tag"], "invalid_utf8", 4),
            Row(good[2]["tag"], KEPT, 5),
            Row(bad[2]["tag"], "invalid_utf8", 6),
            Row(good[3]["tag"], KEPT, 7),
        ],
    )

    k.start("lone-surrogates")
    good = k.record()
    lone = [k.tag() for _ in range(3)]
    lines = [
        good,
        f'{{"tag": "{lone[0]}", "text": "{lone[0]} high \\ud800 alone"}}'.encode(),
        f'{{"tag": "{lone[1]}", "text": "{lone[1]} low \\udc00 alone"}}'.encode(),
        f'{{"tag": "{lone[2]}", "text": "{lone[2]} reversed \\udc00\\ud800"}}'.encode(),
    ]
    k.add(
        _write(k.path("surrogates.jsonl"), _jsonl(lines)),
        [Row(good["tag"], KEPT, 1)] + [Row(t, "invalid_utf8", i + 2) for i, t in enumerate(lone)],
    )

    k.start("nul-bytes")
    escaped = k.record()
    escaped["text"] = escaped["text"].replace(" ", " \u0000", 3)  # escaped NULs: valid JSON, stripped by normalize
    only_nul = k.record()
    only_nul["text"] = "\u0000\u0000"  # nothing left after normalize
    raw_tag = k.tag()
    raw_nul = f'{{"tag": "{raw_tag}", "text": "{raw_tag} raw \x00 byte"}}'.encode()  # a raw NUL in a string: not JSON
    k.add(
        _write(k.path("nul.jsonl"), _jsonl([escaped, only_nul, raw_nul])),
        [Row(escaped["tag"], KEPT, 1), Row(only_nul["tag"], "empty_text", 2), Row(raw_tag, "invalid_json", 3)],
    )


# ----------------------------------------------------------------------------- types and fields


def _types_and_fields(k: _Kinds) -> None:
    k.start("wrong-text-types")
    records = [k.record(), k.record(), k.record(), k.record(), k.record(), k.record()]
    for r, value in zip(records[1:], (42, 1.5, ["a", "list"], {"an": "object"}, True)):
        r["text"] = value
    k.add(
        _write(k.path("text-types.jsonl"), _jsonl(records)),
        [Row(records[0]["tag"], KEPT, 1)]
        + [Row(r["tag"], "text_not_string", i + 2) for i, r in enumerate(records[1:])],
    )

    k.start("wrong-id-types")  # kept; the id stays in meta, the row gets a derived id
    values = [1.5, True, ["a", 1], {"nested": "id"}, None, 12345678901234567890123]
    records = [k.record(id=v) for v in values]
    lines = [json.dumps(r).encode() for r in records]
    rows = [
        Row(
            r["tag"],
            KEPT,
            i + 1,
            derived_id=True,
            meta={"id": v if not isinstance(v, int) or isinstance(v, bool) else float(v)},
        )
        for i, (r, v) in enumerate(zip(records, values))
    ]
    good = k.record(id=70007)  # integers are ids as they are
    k.add(_write(k.path("id-types.jsonl"), _jsonl(lines + [good])), rows + [Row(good["tag"], KEPT, 7, id="70007")])

    k.start("non-string-source")  # kept under the shard's name; the source stays in meta
    values = [3, 2.5, ["web", "books"], {"name": "web"}, False]
    records = [k.record(source=v) for v in values]
    named = k.record(source="named")
    k.add(
        _write(k.path("source-types.jsonl"), _jsonl(records + [named])),
        [
            Row(r["tag"], KEPT, i + 1, source="source-types", meta={"source": v})
            for i, (r, v) in enumerate(zip(records, values))
        ]
        + [Row(named["tag"], KEPT, 6, source="named")],
    )

    k.start("nested-fields")
    nested = {
        "a": {"b": {"c": [1, 2, {"d": None}]}},
        "list": [[1], [2, [3]]],
        "deep": json.loads("[" * 200 + "]" * 200),
    }
    records = [k.record(**nested) for _ in range(3)]
    too_deep = k.record()
    too_deep_line = json.dumps(too_deep).encode()[:-1] + b', "deeper": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    k.add(
        _write(k.path("nested.jsonl"), _jsonl(records + [too_deep_line])),
        [Row(r["tag"], KEPT, i + 1, meta=nested) for i, r in enumerate(records)]
        + [Row(too_deep["tag"], "invalid_json", 4)],
    )

    k.start("missing-fields")
    no_text = {"tag": k.tag(), "body": "the text is elsewhere"}
    null_text = {"tag": k.tag(), "text": None}
    bare = k.record()  # no id, no source, no url: all derived or defaulted
    k.add(
        _write(k.path("missing.jsonl"), _jsonl([no_text, null_text, bare])),
        [
            Row(no_text["tag"], "missing_text", 1),
            Row(null_text["tag"], "missing_text", 2),
            Row(bare["tag"], KEPT, 3, derived_id=True, source="missing"),
        ],
    )

    k.start("not-json-objects")
    tags = [k.tag() for _ in range(5)]
    lines = [
        f'["{tags[0]}", "an array"]'.encode(),
        f'"{tags[1]} a string"'.encode(),
        f"{tags[2]}".encode(),
        f'{{"tag": "{tags[3]}", "text": "cut off'.encode(),
        f'{{"tag": "{tags[4]}", "text": "x"}} trailing'.encode(),
    ]
    k.add(
        _write(k.path("not-objects.jsonl"), _jsonl(lines)), [Row(t, "invalid_json", i + 1) for i, t in enumerate(tags)]
    )

    k.start("empty-text")
    records = [k.record(), k.record(), k.record(), k.record()]
    records[1]["text"], records[2]["text"] = "", " \n\t\u3000 "
    k.add(
        _write(k.path("empty-text.jsonl"), _jsonl(records)),
        [
            Row(records[0]["tag"], KEPT, 1),
            Row(records[1]["tag"], "empty_text", 2),
            Row(records[2]["tag"], "empty_text", 3),
            Row(records[3]["tag"], KEPT, 4),
        ],
    )

    k.start("line-endings")  # CRLF, and no newline after the last line
    records = [k.record() for _ in range(4)]
    k.add(_write(k.path("crlf.jsonl"), _jsonl(records).replace(b"\n", b"\r\n")[:-2]), _kept_rows(records))


# ----------------------------------------------------------------------------- sizes


def _sizes(k: _Kinds) -> None:
    big = "word " * (MAX_DOC_BYTES // 2)  # ~2.5x max_doc_bytes of text: past the line cap too
    for final_newline in (True, False):
        k.start(f"oversized-line-{'with' if final_newline else 'without'}-final-newline")
        before, after = k.record(), k.record()
        huge = k.record()
        huge["text"] = huge["text"] + big
        data = _jsonl([before, huge, after] if final_newline else [before, after, huge])
        rows = (
            [Row(before["tag"], KEPT, 1), Row(huge["tag"], "oversized", 2), Row(after["tag"], KEPT, 3)]
            if final_newline
            else [Row(before["tag"], KEPT, 1), Row(after["tag"], KEPT, 2), Row(huge["tag"], "oversized", 3)]
        )
        k.add(
            _write(
                k.path(f"oversized-{'nl' if final_newline else 'no-nl'}.jsonl.zst"),
                zstandard.ZstdCompressor().compress(data if final_newline else data[:-1]),
            ),
            rows,
        )
    k.start("oversized-text-under-the-line-cap")  # the line is read whole; its text is over the limit
    record = k.record()
    record["text"] = record["text"] + "\u00e9" * (MAX_DOC_BYTES // 2 + 10)
    ok = k.record()
    k.add(
        _write(k.path("oversized-text.jsonl"), _jsonl([ok, json.dumps(record, ensure_ascii=False).encode()])),
        [Row(ok["tag"], KEPT, 1), Row(record["tag"], "oversized", 2)],
    )
    k.start("oversized-parquet-text")
    records = [k.record(), k.record(), k.record()]
    records[1]["text"] += "x" * MAX_DOC_BYTES
    k.add(
        _write(k.path("oversized.parquet"), _parquet(pa.Table.from_pylist(records))),
        [Row(records[0]["tag"], KEPT, 0), Row(records[1]["tag"], "oversized", 1), Row(records[2]["tag"], KEPT, 2)],
        unit="row",
    )


# ----------------------------------------------------------------------------- ids


def _ids(k: _Kinds) -> None:
    k.start("duplicate-ids-jsonl")  # the first occurrence wins
    ids = ["a", "b", "a", "c", "b", "a", 7, "7"]
    records = [k.record(id=i) for i in ids]
    first: dict[str, int] = {}
    rows = []
    for line, (r, i) in enumerate(zip(records, ids), start=1):
        key = str(i)
        rows.append(Row(r["tag"], KEPT, line, id=key) if key not in first else Row(r["tag"], "duplicate_id", line))
        first.setdefault(key, line)
    k.add(_write(k.path("dup-ids.jsonl"), _jsonl(records)), rows)

    k.start("duplicate-ids-parquet")
    ids = [f"p{i % 7}" for i in range(30)]
    records = [k.record(id=i) for i in ids]
    rows = [
        Row(r["tag"], KEPT if n < 7 else "duplicate_id", n, id=i if n < 7 else None)
        for n, (r, i) in enumerate(zip(records, ids))
    ]
    k.add(
        _write(k.path("dup-ids.parquet"), _parquet(pa.Table.from_pylist(records), row_group_size=8)), rows, unit="row"
    )

    k.start("hostile-ids")  # ids are data: kept as they are, never a path
    hostile = [
        "../../etc/passwd",
        "/absolute/path",
        "C:\\Windows\\system32",
        "a" * 10_000,
        "日本語/ümlaut/🦀",
        "with\nnewline",
        "with\ttab and spaces",
        "%2e%2e%2f",
        "_removed/part-00000",
        "id\u202eRTL",
        "-1",
        "  ",
    ]
    records = [k.record(id=i) for i in hostile]
    empty = k.record(id="")  # an empty id is no id: derived
    k.add(
        _write(k.path("hostile-ids.jsonl"), _jsonl(records + [empty])),
        [Row(r["tag"], KEPT, n + 1, id=i) for n, (r, i) in enumerate(zip(records, hostile))]
        + [Row(empty["tag"], KEPT, len(records) + 1, derived_id=True)],
    )


# ----------------------------------------------------------------------------- Parquet schemas


def _parquet_drift(k: _Kinds) -> None:
    k.start("parquet-schema-drift")
    a = [k.record() for _ in range(4)]
    table_a = pa.table(
        {
            "tag": [r["tag"] for r in a],
            "id": pa.array([10, 11, 12, 13], pa.int64()),
            "text": pa.array([r["text"] for r in a], pa.large_string()),
            "score": [0.5, 0.25, None, 1.0],
        }
    )
    k.add(
        _write(k.path("drift-a.parquet"), _parquet(table_a)),
        [Row(r["tag"], KEPT, n, id=str(10 + n), meta={"score": table_a["score"][n].as_py()}) for n, r in enumerate(a)],
        unit="row",
    )

    b = [k.record() for _ in range(4)]
    table_b = pa.table(
        {
            "text": [r["text"] for r in b],
            "tag": [r["tag"] for r in b],
            "id": [f"b{n}" for n in range(4)],
            "source": pa.array(["web", "web", None, "books"]).dictionary_encode(),
            "extra": pa.array([{"x": [1, 2], "y": "z"}] * 4),
            "url": [f"https://e.org/{n}" for n in range(4)],
        }
    )
    k.add(
        _write(k.path("drift-b.parquet"), _parquet(table_b)),
        [
            Row(
                r["tag"],
                KEPT,
                n,
                id=f"b{n}",
                source=["web", "web", "drift-b", "books"][n],
                meta={"extra": {"x": [1, 2], "y": "z"}},
            )
            for n, r in enumerate(b)
        ],
        unit="row",
    )

    c = [k.record() for _ in range(4)]
    texts = [r["text"].encode() for r in c]
    texts[2] = texts[2] + b" \xff\xfe broken"
    table_c = pa.table(
        {
            "tag": [r["tag"] for r in c],
            "text": pa.array(texts, pa.binary()),
            "id": pa.array([1.5, 2.5, 3.5, None], pa.float64()),
            "source": pa.array([1, 2, 3, 4], pa.int32()),
            "blob": pa.array([b"\x00\x01", None, b"x", b"y"], pa.binary()),
            "when": pa.array([0, 1, 2, 3], pa.timestamp("s")),
            "url": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )
    k.add(
        _write(k.path("drift-c.parquet"), _parquet(table_c)),
        [
            Row(
                r["tag"],
                "invalid_utf8" if n == 2 else KEPT,
                n,
                derived_id=n != 2,
                source="drift-c" if n != 2 else None,
                meta=None
                if n == 2
                else {
                    "source": n + 1,
                    "blob": [_b64(b"\x00\x01"), None, None, _b64(b"y")][n],
                    **({"id": 1.5 + n} if n < 3 else {}),
                },
            )
            for n, r in enumerate(c)
        ],
        unit="row",
    )

    k.start("parquet-text-not-string")
    tags = [k.tag() for _ in range(3)]
    k.add(
        _write(k.path("text-ints.parquet"), _parquet(pa.table({"tag": tags, "text": [1, 2, 3]}))),
        [Row(t, "text_not_string", n) for n, t in enumerate(tags)],
        unit="row",
    )
    k.start("parquet-no-text-column")
    tags = [k.tag() for _ in range(2)]
    k.add(
        _write(k.path("no-text.parquet"), _parquet(pa.table({"tag": tags, "body": ["a", "b"]}))),
        [Row(t, "missing_text", n) for n, t in enumerate(tags)],
        unit="row",
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


# ----------------------------------------------------------------------------- names


def _names(k: _Kinds) -> None:
    k.start("odd-file-names")
    for name in ("with space.jsonl", "ünïcødé 日本.jsonl", "hash#tag.jsonl", "percent%20.jsonl", "brackets[1].jsonl"):
        records = [k.record() for _ in range(2)]
        stem = name.removesuffix(".jsonl")
        k.add(
            _write(k.path(os.path.join("odd names", name)), _jsonl(records)),
            [Row(r["tag"], KEPT, n + 1, source=stem) for n, r in enumerate(records)],
        )
    k.start("upper-case-extensions")
    for name, pack in (
        ("UPPER.JSONL", lambda d: d),
        ("UPPER-GZ.JSONL.GZ", gzip.compress),
        ("UPPER-ZST.Jsonl.Zst", zstandard.ZstdCompressor().compress),
    ):
        records = [k.record() for _ in range(2)]
        k.add(
            _write(k.path(name), pack(_jsonl(records))),
            [Row(r["tag"], KEPT, n + 1, source=name.split(".")[0]) for n, r in enumerate(records)],
        )
    records = [k.record() for _ in range(2)]
    k.add(
        _write(k.path("UPPER.Parquet"), _parquet(pa.Table.from_pylist(records))),
        [Row(r["tag"], KEPT, n, source="UPPER") for n, r in enumerate(records)],
        unit="row",
    )


# ----------------------------------------------------------------------------- copies across shards


def _exact_copies(k: _Kinds) -> None:
    """The same text from the same source, without ids, in two shards: two documents with distinct
    derived ids, which dedup then sees as one cluster of two."""
    k.start("exact-copies-across-shards")
    text = prose(424242, 10)
    group = []
    for name in ("copy-a.jsonl", "copy-b.jsonl.gz"):
        tag = k.tag()
        record = {"tag": tag, "text": text, "source": "web"}
        data = _jsonl([record])
        k.add(
            _write(k.path(name), gzip.compress(data) if name.endswith(".gz") else data),
            [Row(tag, KEPT, 1, derived_id=True, source="web")],
        )
        group.append(tag)
    k.corpus.copy_groups.append(group)


def _low_quality(k: _Kinds) -> None:
    """Well-formed rows that the filter stage drops (too short, no words, repetitive), next to good ones."""
    k.start("low-quality-for-the-filter")
    good = [k.record(), k.record()]
    junk = [k.record(), k.record(), k.record()]
    junk[0]["text"] = f"{junk[0]['tag']} too short."
    junk[1]["text"] = f"{junk[1]['tag']} " + " ".join(str(n) for n in range(200))
    junk[2]["text"] = f"{junk[2]['tag']} " + "the same line again and again.\n" * 60
    records = [good[0], junk[0], junk[1], good[1], junk[2]]
    k.add(
        _write(k.path("low-quality.jsonl"), _jsonl(records)),
        [Row(r["tag"], KEPT, n + 1, dropped_by="filter" if r in junk else None) for n, r in enumerate(records)],
    )
