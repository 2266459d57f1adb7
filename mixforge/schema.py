"""The document contract (DESIGN.md, "Data contract").

Core columns every stage reads and writes; stages append annotation columns after them.
`meta` holds every other input field as a JSON object string, so shards with different
extra fields still share one Arrow schema and nothing from the input is lost.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

ID, TEXT, SOURCE, URL, META = "id", "text", "source", "url", "meta"
CORE_COLUMNS = (ID, TEXT, SOURCE, URL, META)

# Audit columns of `_removed/` shards.
DROP_REASON = "drop_reason"
DROP_DETAIL = "drop_detail"  # human-readable: names shard and row/line

CORE_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(TEXT, pa.string()),
        pa.field(SOURCE, pa.string()),
        pa.field(URL, pa.string()),
        pa.field(META, pa.string()),
    ]
)


def text_digest(raw: bytes) -> str:
    """Stable 16-hex-digit digest of a document's raw text bytes."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def shard_tag(uri: str) -> str:
    """Stable 12-hex-digit tag of an input shard's URI: part of the ids derived for its rows."""
    return hashlib.blake2b(uri.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def derive_id(source: str, digest: str, occurrence: int, shard: str) -> str:
    """Id for an input row that has none: source / shard tag / hash of raw text - occurrence.

    The occurrence number (of that source and text within the shard) keeps exact duplicates
    within one shard distinct, and the shard tag (`shard_tag` of the input URI) keeps them
    distinct across shards, so dedup sees every copy and can name which one it kept.
    """
    return f"{source}/{shard}/{digest}-{occurrence}"


def align_to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder/cast `table` to `schema`, adding missing nullable columns as nulls."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=schema)
