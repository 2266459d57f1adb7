"""The steps of an export: scatter (per mixture data file), gather (per bucket of output parts) and,
for a version derived by a takedown, reuse (per part of the parent version's export).

Scatter reads one mixture file a row group at a time, tokenises each document as
`[BOS] + prefix + text + EOS` (the metadata prefix and the text encoded separately), gives it a
shuffle key and a partition (an output part of its phase), and writes one scratch piece per input
file with one row group per (row group read, partition): the `_partition` column's statistics tell
a gather which row groups are its own. Gather takes a bucket of partitions and, for each, reads its
row groups from every piece, orders the documents by key and writes the part's files (the format's)
and its lineage sidecar, then a done-marker holding the part's manifest entry. No step holds more
than one input row group or one output part; everything goes through the store.

The key is a splitmix64 hash of (seed, phase, pool_shard, pool_row, pool_copy): a document's place
depends only on its own lineage, so a takedown that removes documents leaves every other one where
it was. Versions written before mixture rows had lineage use (seed, phase, mixture file part, row).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixforge import schema as S
from mixforge import storage
from mixforge.export.formats import get_format
from mixforge.mixtures.spec import TokenizerSpec
from mixforge.shards import parquet_bytes, parquet_file, read_parquet
from mixforge.tokenizer import LoadedTokenizer, load_tokenizer

DOMAIN = "domain"  # a template field derived from the row's URL (its host), not read from a column
LINEAGE = (S.POOL_SHARD, S.POOL_ROW, S.POOL_COPY)
SCRATCH_COMPRESSION = "lz4"
SIDECAR_COMPRESSION = "zstd"
# scratch columns: the document's partition and key, where it was in the mixture file (ties, old versions)
PARTITION, KEY, PART, ROW, PREFIX, TOKENS = "_partition", "_key", "_part", "_row", "prefix_tokens", "tokens"

SIDECAR_SCHEMA = pa.schema(
    [
        pa.field("token_start", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int64(), nullable=False),
        pa.field("prefix_tokens", pa.int32(), nullable=False),
        pa.field(S.ID, pa.string()),
        pa.field(S.SOURCE, pa.string()),
        pa.field(S.MIX_GROUP, pa.string()),
        pa.field(S.POOL_SHARD, pa.int32()),
        pa.field(S.POOL_ROW, pa.int64()),
        pa.field(S.POOL_COPY, pa.int32()),
        pa.field("run_id", pa.string()),
        pa.field("shuffle_key", pa.uint64(), nullable=False),
    ]
)
PIECE_SCHEMA = pa.schema(
    [
        pa.field(PARTITION, pa.int32()),
        pa.field(KEY, pa.uint64()),
        pa.field(PART, pa.int32()),
        pa.field(ROW, pa.int64()),
        pa.field(S.ID, pa.string()),
        pa.field(S.SOURCE, pa.string()),
        pa.field(S.MIX_GROUP, pa.string()),
        pa.field(S.POOL_SHARD, pa.int32()),
        pa.field(S.POOL_ROW, pa.int64()),
        pa.field(S.POOL_COPY, pa.int32()),
        pa.field(PREFIX, pa.int32()),
        pa.field(TOKENS, pa.large_list(pa.uint32())),
    ]
)


# ----------------------------------------------------------------------------- keys and partitions

_U64 = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(_U64) + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def _name_hash(*names: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(names).encode(), digest_size=8).digest(), "little")


def shuffle_keys(seed: int, phase: str, columns: Sequence[np.ndarray], lineage: bool) -> np.ndarray:
    """uint64 keys of documents from their (pool_shard, pool_row, pool_copy), or, without lineage,
    their (mixture file part, row); each column hashed in turn after (seed, phase)."""
    n = len(columns[0])
    start = _U64(_name_hash("lineage" if lineage else "file-row", phase)) ^ _U64(seed)
    h = splitmix64(np.full(n, start, _U64))
    for col in columns:
        h = splitmix64(h ^ np.asarray(col).astype(np.int64).view(_U64))
    return h


def partition_of(keys: np.ndarray, partitions: int) -> np.ndarray:
    """(key >> 32) * P >> 32: the key's high half scaled to [0, P), as int32."""
    return (((keys >> _U64(32)) * _U64(partitions)) >> _U64(32)).astype(np.int32)


def partitions_for(tokens: int, file_tokens: int) -> int:
    return max(1, -(-int(tokens) // int(file_tokens)))


# ----------------------------------------------------------------------------- documents -> tokens


def template_fields(template: str) -> list[str]:
    """The row fields a metadata template names (`{domain}\\n\\n` -> ["domain"]); ValueError for a
    malformed template or a positional field."""
    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        base = name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise ValueError(
                f"metadata template {template!r}: fields must be named ({{domain}}, {{source}}), not {{{name}}}"
            )
        if base not in fields:
            fields.append(base)
    return fields


def url_hosts(urls: Sequence[str | None]) -> list[str]:
    """Each URL's host as `urlsplit(url).hostname` gives it ("" for none, a null or a malformed URL)."""
    out = []
    for url in urls:
        try:
            out.append((urlsplit(url).hostname or "") if url else "")
        except ValueError:  # a malformed URL has no host to condition on
            out.append("")
    return out


# The URLs whose host urlsplit takes as it is (lowercased): scheme://host[:port][/?#rest], printable ASCII, no
# userinfo, brackets or escapes in the host. Every other URL goes through url_hosts itself.
_PLAIN_URL = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?P<host>[A-Za-z0-9.\-]*)(?::[0-9]*)?(?:[/?#][!-~]*)?$"


def url_host_array(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`url_hosts` over an Arrow column: plain URLs by one regex pass, the rest (nulls, userinfo, IPv6,
    non-ASCII, malformed) by `url_hosts`."""
    urls = pc.cast(urls, pa.large_string())
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    hosts = pc.utf8_lower(pc.struct_field(pc.extract_regex(urls, _PLAIN_URL), [0]))
    other = pc.is_null(hosts)
    rows = np.flatnonzero(other.to_numpy(zero_copy_only=False))
    if len(rows):
        hosts = pc.replace_with_mask(hosts, other, pa.array(url_hosts(urls.take(rows).to_pylist()), pa.large_string()))
    return hosts


def _plain_fields(template: str) -> list[tuple[str, str | None]] | None:
    """The template as (literal, field or None) pairs when every field is a bare name (`{source}`); None when
    one has a conversion, a format spec, an attribute or an index (those are rendered row by row)."""
    pieces = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and (spec or conversion or not name.isidentifier()):
            return None
        pieces.append((literal, name))
    return pieces


def _as_text(column: pa.ChunkedArray) -> pa.Array | None:
    """A string or integer column as the text str() gives each value, nulls as ""; None for other types."""
    t = column.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
        if not pa.types.is_integer(t):
            return None
    return pc.fill_null(pc.cast(column, pa.large_string()), "").combine_chunks()


def render_prefixes(template: str, table: pa.Table) -> list[str]:
    """The template filled in for each row: its fields from the row's columns (null: empty), `domain`
    from its URL; as `template.format_map(row)` gives it, done by column (Arrow) for bare `{name}` fields
    over string and integer columns, row by row otherwise."""
    fields = template_fields(template)
    pieces = _plain_fields(template)
    if pieces is None:
        return _render_rows(template, table, fields)
    values = {f: url_host_array(table.column(S.URL)) if f == DOMAIN else _as_text(table.column(f)) for f in fields}
    if any(v is None for v in values.values()):
        return _render_rows(template, table, fields)
    if not fields:  # no field: every row is the template's text
        return [template.format_map({})] * table.num_rows
    parts = []
    for literal, name in pieces:
        if literal:
            parts.append(pa.scalar(literal, pa.large_string()))
        if name is not None:
            parts.append(values[name])
    return pc.binary_join_element_wise(*parts, pa.scalar("", pa.large_string())).to_pylist()


def _render_rows(template: str, table: pa.Table, fields: list[str]) -> list[str]:
    values = {
        f: (url_hosts(table.column(S.URL).to_pylist()) if f == DOMAIN else table.column(f).to_pylist()) for f in fields
    }
    rows = [{f: "" if values[f][i] is None else values[f][i] for f in fields} for i in range(table.num_rows)]
    return [template.format_map(row) for row in rows]


def encode_documents(
    tok: LoadedTokenizer, texts: list[str], prefixes: list[str] | None, bos: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every document as `[BOS] + prefix + text + EOS`, flat: (uint32 tokens, int64 offsets (n + 1),
    int32 tokens before the text (BOS and prefix))."""
    n = len(texts)
    text_ids, text_off = tok.encode_batch(texts)
    if prefixes is not None:
        prefix_ids, prefix_off = tok.encode_batch(prefixes)
    else:
        prefix_ids, prefix_off = np.zeros(0, np.uint32), np.zeros(n + 1, np.int64)
    head = int(bos)
    plen, tlen = np.diff(prefix_off), np.diff(text_off)
    lengths = head + plen + tlen + 1
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    starts = offsets[:-1]
    out = np.empty(int(offsets[-1]), np.uint32)
    if bos:
        out[starts] = tok.bos_id
    # each flat id goes to its document's start + what comes before it there
    out[np.repeat(starts + head - prefix_off[:-1], plen) + np.arange(len(prefix_ids))] = prefix_ids
    out[np.repeat(starts + head + plen - text_off[:-1], tlen) + np.arange(len(text_ids))] = text_ids
    out[offsets[1:] - 1] = tok.eos_id
    return out, offsets, (head + plen).astype(np.int32)


# ----------------------------------------------------------------------------- scatter


@dataclass(frozen=True)
class Encoding:
    """How documents become tokens (the same for every step of an export)."""

    tokenizer: TokenizerSpec
    eos_token: str | None
    bos_token: str | None
    bos: bool

    def load(self, storage_options: Mapping[str, Any] | None = None) -> LoadedTokenizer:
        return load_tokenizer(
            self.tokenizer, eos_token=self.eos_token, bos_token=self.bos_token, storage_options=storage_options
        )


@dataclass(frozen=True)
class ScatterJob:
    phase: str
    part: int  # the mixture file's part number within its phase
    uri: str  # the mixture data file
    partitions: int
    seed: int
    encoding: Encoding
    template: str | None  # the metadata prefix of this phase (None: none)
    piece: str  # scratch piece URI: written atomically, its presence is the step's marker


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.Array:
    if name in table.column_names:
        return table.column(name).combine_chunks().cast(type_)
    return pa.nulls(table.num_rows, type_)


def scatter(job: ScatterJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tokenise one mixture file into its scratch piece; (phase, part, docs, skipped)."""
    if storage.exists(job.piece, storage_options):
        return {"phase": job.phase, "part": job.part, "skipped": True}
    tok = job.encoding.load(storage_options)
    fields = template_fields(job.template) if job.template else []
    docs = 0
    with parquet_file(job.uri, storage_options) as pf, storage.atomic_open(job.piece, storage_options) as out:
        names = pf.schema_arrow.names
        lineage = all(c in names for c in LINEAGE)
        wanted = {S.ID, S.TEXT, S.SOURCE, S.MIX_GROUP, *LINEAGE, *fields} | ({S.URL} if DOMAIN in fields else set())
        columns = [c for c in names if c in wanted]
        with pq.ParquetWriter(out, PIECE_SCHEMA, compression=SCRATCH_COMPRESSION) as writer:
            for rg in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(rg, columns=columns, use_threads=False)
                n = table.num_rows
                if not n:
                    continue
                rows = np.arange(docs, docs + n, dtype=np.int64)
                lin = [_column(table, c, t) for c, t in zip(LINEAGE, (pa.int32(), pa.int64(), pa.int32()))]
                if lineage:
                    if any(a.null_count for a in lin):
                        raise ValueError(f"{job.uri}: row group {rg} has rows without lineage ({', '.join(LINEAGE)})")
                    keys = shuffle_keys(job.seed, job.phase, [a.to_numpy() for a in lin], lineage=True)
                else:
                    keys = shuffle_keys(job.seed, job.phase, [np.full(n, job.part), rows], lineage=False)
                texts = [t or "" for t in table.column(S.TEXT).to_pylist()]
                prefixes = render_prefixes(job.template, table) if job.template else None
                flat, offsets, prefix = encode_documents(tok, texts, prefixes, job.encoding.bos)
                part_of = partition_of(keys, job.partitions)
                piece = pa.Table.from_arrays(
                    [
                        pa.array(part_of, pa.int32()),
                        pa.array(keys, pa.uint64()),
                        pa.array(np.full(n, job.part, np.int32)),
                        pa.array(rows),
                        _column(table, S.ID, pa.string()),
                        _column(table, S.SOURCE, pa.string()),
                        _column(table, S.MIX_GROUP, pa.string()),
                        *lin,
                        pa.array(prefix, pa.int32()),
                        pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint32())),
                    ],
                    schema=PIECE_SCHEMA,
                )
                order = np.argsort(part_of, kind="stable")
                piece, ordered = piece.take(pa.array(order)), part_of[order]
                edges = np.flatnonzero(np.diff(ordered)) + 1
                for lo, hi in zip(np.r_[0, edges], np.r_[edges, n]):  # one row group per partition
                    writer.write_table(piece.slice(lo, hi - lo), row_group_size=max(1, hi - lo))
                docs += n
    return {"phase": job.phase, "part": job.part, "docs": docs, "skipped": False}


# ----------------------------------------------------------------------------- gather


@dataclass(frozen=True)
class PartTarget:
    """Where one output part goes: its files' stem (`.../<phase>/part-NNNNN`) and its done-marker."""

    phase: str
    part: int
    stem: str
    marker: str

    @property
    def lineage(self) -> str:
        return f"{self.stem}.lineage.parquet"


@dataclass(frozen=True)
class GatherJob:
    targets: tuple[PartTarget, ...]  # a bucket of consecutive partitions of one phase
    pieces: tuple[str, ...]  # every scratch piece of the phase
    format: str
    vocab_size: int
    run_ids: tuple[str | None, ...]  # of the mixture manifest's pool shards, by index


def _group_figures(groups: pa.ChunkedArray | pa.Array, n_tokens: np.ndarray) -> tuple[dict[str, int], dict[str, int]]:
    """Tokens and documents per mix group (null: ""), sorted by group name."""
    figures = (
        pa.table({"g": pc.fill_null(groups, ""), "t": pa.array(n_tokens, pa.int64())})
        .group_by("g")
        .aggregate([("t", "sum"), ("t", "count")])
        .to_pydict()
    )
    order = sorted(range(len(figures["g"])), key=figures["g"].__getitem__)  # per group, not per document
    return (
        {figures["g"][i]: figures["t_sum"][i] for i in order},
        {figures["g"][i]: figures["t_count"][i] for i in order},
    )


def write_part(
    target: PartTarget,
    fmt_name: str,
    vocab_size: int,
    tokens: np.ndarray,
    sidecar: pa.Table,
    storage_options: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write a part's files and lineage sidecar, then its done-marker; its manifest entry."""
    fmt = get_format(fmt_name)
    sidecar = sidecar.cast(
        SIDECAR_SCHEMA
    )  # one schema, nullability included: a rewritten part's bytes as a fresh one's
    lengths = sidecar.column("n_tokens").to_numpy().astype(np.int64)
    written = fmt.write(target.stem, tokens.astype(fmt.dtype(vocab_size), copy=False), lengths, storage_options)
    data = parquet_bytes(sidecar, compression=SIDECAR_COMPRESSION)
    storage.write_bytes(target.lineage, data, storage_options)
    group_tokens, group_docs = _group_figures(sidecar.column(S.MIX_GROUP), lengths)
    entry = {
        "phase": target.phase,
        "part": target.part,
        "uri": target.stem + fmt.suffixes()[0],
        "files": written,
        "lineage": target.lineage,
        "lineage_sha256": hashlib.sha256(data).hexdigest(),
        "docs": sidecar.num_rows,
        "tokens": int(lengths.sum()),
        "groups": group_tokens,
        "group_docs": group_docs,
        **extra,
    }
    storage.write_json(target.marker, entry, storage_options)
    return entry


def _rows_by_partition(pieces: Sequence[str], storage_options) -> dict[int, list[tuple[str, list[int]]]]:
    """partition -> [(piece, its row groups)], from the pieces' footers (`_partition` statistics)."""
    where: dict[int, list[tuple[str, list[int]]]] = {}
    for uri in pieces:
        with parquet_file(uri, storage_options) as pf:
            meta = pf.metadata
        col = meta.schema.names.index(PARTITION)
        by_part: dict[int, list[int]] = {}
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(col).statistics
            if st is None or not st.has_min_max or st.min != st.max:
                raise RuntimeError(f"{uri}: row group {rg} does not hold exactly one partition")
            by_part.setdefault(int(st.min), []).append(rg)
        for p, rgs in by_part.items():
            where.setdefault(p, []).append((uri, rgs))
    return where


def gather(job: GatherJob, storage_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write each partition of the bucket (skipping those with a done-marker); their manifest entries."""
    out: list[dict[str, Any]] = []
    todo = []
    for t in job.targets:
        try:
            out.append(storage.read_json(t.marker, storage_options))
        except FileNotFoundError:
            todo.append(t)
    where = _rows_by_partition(job.pieces, storage_options) if todo else {}
    for t in todo:
        tables = []
        for piece, rgs in where.get(t.part, []):
            with parquet_file(piece, storage_options) as pf:
                tables.append(pf.read_row_groups(rgs, use_threads=False))
        table = pa.concat_tables(tables) if tables else PIECE_SCHEMA.empty_table()
        fill = {c: pc.fill_null(table.column(c), -1).to_numpy() for c in (*LINEAGE, PART, ROW)}
        # by key; ties (not expected from a 64-bit hash) by lineage, then by place in the mixture
        order = np.lexsort(
            [fill[ROW], fill[PART], *(fill[c] for c in reversed(LINEAGE)), table.column(KEY).to_numpy()]
        )
        table = table.take(pa.array(order))
        flat = table.column(TOKENS).combine_chunks()
        lengths = pc.list_value_length(flat).to_numpy(zero_copy_only=False).astype(np.int64)
        tokens = flat.flatten().to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, np.uint32)
        # each row's run id by its pool shard (null: null), one take over the manifest's list
        run_ids = pa.array(job.run_ids, pa.string()).take(table.column(S.POOL_SHARD).combine_chunks())
        sidecar = sidecar_table(table, lengths, run_ids)
        out.append(write_part(t, job.format, job.vocab_size, tokens, sidecar, storage_options))
    return sorted(out, key=lambda e: e["part"])


def sidecar_table(table: pa.Table, lengths: np.ndarray, run_ids: pa.Array) -> pa.Table:
    starts = np.zeros(len(lengths), np.int64)
    if len(lengths):
        np.cumsum(lengths[:-1], out=starts[1:])
    return pa.Table.from_arrays(
        [
            pa.array(starts, pa.int64()),
            pa.array(lengths, pa.int64()),
            table.column(PREFIX).cast(pa.int32()),
            table.column(S.ID),
            table.column(S.SOURCE),
            table.column(S.MIX_GROUP),
            table.column(S.POOL_SHARD),
            table.column(S.POOL_ROW),
            table.column(S.POOL_COPY),
            run_ids,
            table.column(KEY),
        ],
        schema=SIDECAR_SCHEMA,
    )


# ----------------------------------------------------------------------------- takedown: reuse the parent's parts


@dataclass(frozen=True)
class ReuseJob:
    target: PartTarget
    parent: dict[str, Any]  # the parent export's manifest entry of this part
    removed_ids: frozenset[str]  # the documents the takedown removed
    format: str
    vocab_size: int


def _copy(src: str, dst: str, storage_options: Mapping[str, Any] | None) -> None:
    fs, src_path = storage.filesystem(src, storage_options)
    dst_path = storage.filesystem(dst, storage_options)[1]
    fs.makedirs(dst_path.rsplit("/", 1)[0], exist_ok=True)
    fs.copy(src_path, dst_path)  # within the store (a server-side copy on S3): no bytes through this process


def reuse(job: ReuseJob, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A part of a derived version's export from its parent's: copied as it is when it holds none of the
    removed documents, else rewritten without their token spans (nothing is tokenised again)."""
    t = job.target
    try:
        return storage.read_json(t.marker, storage_options)
    except FileNotFoundError:
        pass
    sidecar = read_parquet(job.parent["lineage"], storage_options)
    gone = np.asarray(
        pc.is_in(sidecar.column(S.ID), pa.array(sorted(job.removed_ids), pa.string())).to_numpy(zero_copy_only=False),
        bool,
    )
    if not gone.any():
        files = []
        for f in job.parent["files"]:
            uri = t.stem + f["uri"][len(_stem(job.parent)) :]
            _copy(f["uri"], uri, storage_options)
            files.append({**f, "uri": uri})
        _copy(job.parent["lineage"], t.lineage, storage_options)
        entry = {
            **job.parent,
            "phase": t.phase,
            "part": t.part,
            "uri": t.stem + job.parent["uri"][len(_stem(job.parent)) :],
            "files": files,
            "lineage": t.lineage,
            "copied_from": job.parent["uri"],
        }
        storage.write_json(t.marker, entry, storage_options)
        return entry
    tokens, _ = get_format(job.format).read(_stem(job.parent), storage_options)
    keep = ~gone
    starts = sidecar.column("token_start").to_numpy()[keep]
    lengths = sidecar.column("n_tokens").to_numpy()[keep].astype(np.int64)
    # the kept documents' spans, in file order: each token's source is its span's start + its place in it
    new_starts = np.zeros(len(lengths), np.int64)
    if len(lengths):
        np.cumsum(lengths[:-1], out=new_starts[1:])
    index = np.repeat(starts - new_starts, lengths) + np.arange(int(lengths.sum()))
    kept = sidecar.filter(pa.array(keep)).set_column(0, "token_start", pa.array(new_starts, pa.int64()))
    return write_part(
        t,
        job.format,
        job.vocab_size,
        np.asarray(tokens)[index],
        kept,
        storage_options,
        rewritten_from=job.parent["uri"],
    )


def _stem(entry: Mapping[str, Any]) -> str:
    """A part's stem from its manifest entry: its lineage sidecar's URI less `.lineage.parquet`."""
    return entry["lineage"][: -len(".lineage.parquet")]
