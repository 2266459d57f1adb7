"""The document contract (DESIGN.md, "Data contract").

Core columns every stage reads and writes; stages append annotation columns after them.
`meta` holds every other input field as a JSON object string, so shards with different
extra fields still share one Arrow schema and nothing from the input is lost.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ID, TEXT, SOURCE, URL, META = "id", "text", "source", "url", "meta"
CORE_COLUMNS = (ID, TEXT, SOURCE, URL, META)

# Audit columns of `_removed/` shards: one schema for every stage that drops (README, "Data contract").
DROP_REASON = "drop_reason"  # what the stage counts the drop under (`_stats.json` docs_dropped)
DROP_DETAIL = "drop_detail"  # readable: "<shard> row|line <n>: gopher_quality.alpha_words: 0.42 < 0.8"
DROP_RULE = "drop_rule"  # the rule that dropped the row (first failing, in check order); else drop_reason
DROP_VALUE = "drop_value"  # what the rule measured (null: a yes/no rule)
DROP_OP = "drop_op"  # how the value failed its threshold: "<", "<=", ">", ">=" (null: no comparison)
DROP_THRESHOLD = "drop_threshold"
DROP_SHARD = "drop_shard"  # URI of the stage's input shard, as the quarantine ledger's `shard`
DROP_ROW = "drop_row"  # where in that shard: a row (from 0) or a JSONL line (from 1), as `drop_unit` says
DROP_UNIT = "drop_unit"  # "row" | "line"
DROP_FIELDS = (
    pa.field(DROP_REASON, pa.string()),
    pa.field(DROP_DETAIL, pa.string()),
    pa.field(DROP_RULE, pa.string()),
    pa.field(DROP_VALUE, pa.float64()),
    pa.field(DROP_OP, pa.string()),
    pa.field(DROP_THRESHOLD, pa.float64()),
    pa.field(DROP_SHARD, pa.string()),
    pa.field(DROP_ROW, pa.int64()),
    pa.field(DROP_UNIT, pa.string()),
)
DROP_COLUMNS = tuple(f.name for f in DROP_FIELDS)

CORE_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(TEXT, pa.string()),
        pa.field(SOURCE, pa.string()),
        pa.field(URL, pa.string()),
        pa.field(META, pa.string()),
    ]
)


# Annotation columns stages append after the core columns (and the mixture's own), named once here.
LANG, LANG_SCORE = "lang", "lang_score"  # filter: language id
DOMAIN, DOMAIN_SCORE = "domain", "domain_score"  # classify: the only multiclass-domain classifier
CLUSTER_ID, CLUSTER_DISTANCE = "cluster_id", "cluster_distance"  # classify: embedding clusters
DUP_CLUSTER, DUP_COUNT, DUPLICATE_OF = "dup_cluster", "dup_count", "duplicate_of"  # dedup
PARENT_ID = "parent_id"  # rephrase: the document a synthetic row was generated from
N_TOKENS, MIX_GROUP = "n_tokens", "mix_group"  # mixtures: tokens per row, the group it was drawn for
# mixtures: where a mixture row came from (lineage): the pool shard (an index into the manifest's
# pool.shards), its row there, and which copy of that document it is (0 unless repeated)
POOL_SHARD, POOL_ROW, POOL_COPY = "pool_shard", "pool_row", "pool_copy"


_COUNT_BLOCK = 1 << 20  # bytes per count: the comparison's temporary stays in cache


def text_chars(text: pa.Array | pa.ChunkedArray) -> int:
    """Characters (code points) in a string column, nulls counting 0: the stats' `chars_*` figures.

    Every byte that is not a UTF-8 continuation byte (0b10xxxxxx) starts a character, so the total is
    counted over the data buffer in cache-sized blocks, about 5x faster than summing `utf8_length`
    (which the runner did for every batch). Chunks with nulls (whose slots may span data) or other
    layouts take `utf8_length`."""
    total = 0
    for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
        if not len(chunk):
            continue
        if chunk.null_count or not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            total += int(pc.sum(pc.utf8_length(chunk)).as_py() or 0)
            continue
        offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)
        start, end = int(offsets[chunk.offset]), int(offsets[chunk.offset + len(chunk)])
        data = np.frombuffer(chunk.buffers()[2], dtype=np.int8) if end > start else np.zeros(0, np.int8)
        total += end - start
        for at in range(start, end, _COUNT_BLOCK):
            total -= int(np.count_nonzero(data[at : min(end, at + _COUNT_BLOCK)] < -64))  # 0x80..0xBF
    return total


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    """`table` with column `name` replaced in place when present (a rerun over annotated shards), else appended."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


# A `_removed/` shard: the dropped rows' columns, then DROP_FIELDS (an empty shard: the core columns).
REMOVED_SCHEMA = pa.schema(list(CORE_SCHEMA) + list(DROP_FIELDS))


def describe_drops(rule, value, op, threshold) -> pa.Array:
    """The readable part of drop details, vectorised: "<rule>: <value> <op> <threshold>" where the rule
    compared a value with a threshold, else "<rule>". Numbers are rounded to 4 decimals."""

    def number(x):
        return pc.cast(pc.round(x, 4), pa.string())

    rule = pc.cast(rule, pa.string())
    compared = pc.binary_join_element_wise(
        pc.binary_join_element_wise(rule, "", ":"), number(value), pc.cast(op, pa.string()), number(threshold), " "
    )
    return pc.coalesce(compared, rule)


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
