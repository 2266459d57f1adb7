"""Token counts per pool document, counted once and cached beside the pool.

Pool shards are immutable, so counts go to a sidecar per shard and tokenizer:
`<pool dir>/_tokens/<tokenizer key>/<shard name>.parquet` with `id, n_tokens` in the shard's row
order. The sidecar records the shard's fingerprint; a sidecar that does not match it is recounted.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixforge import storage
from mixforge.mixtures.spec import TokenizerSpec
from mixforge.shards import parquet_file, read_documents, shard_stem, write_parquet
from mixforge.tokenizer import TokenizerUnavailable, load_tokenizer

__all__ = ["TokenizerUnavailable", "count_batch", "count_shard", "read_sidecar", "sidecar_uri", "tokenizer_key"]

FINGERPRINT_KEY = b"mixforge.pool_fingerprint"


def tokenizer_key(spec: TokenizerSpec, storage_options: Mapping[str, Any] | None = None) -> str:
    """Folder name of a tokenizer's cache: stable, filesystem-safe."""
    return load_tokenizer(spec, storage_options=storage_options, eos_required=False).key


def count_batch(texts: list[str], spec: TokenizerSpec, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Token counts of `texts` (no special tokens)."""
    return load_tokenizer(spec, storage_options=storage_options, eos_required=False).count_batch(texts)


def sidecar_uri(shard_uri: str, spec: TokenizerSpec, storage_options: Mapping[str, Any] | None = None) -> str:
    parent, name = posixpath.split(shard_uri.rstrip("/"))
    return storage.join(parent, "_tokens", tokenizer_key(spec, storage_options), f"{shard_stem(name)}.parquet")


def shard_fingerprint(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A content fingerprint of a Parquet shard without reading its data pages: sha256 of its
    size and footer (the footer holds every column chunk's offsets, sizes and statistics)."""
    fs, path = storage.filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        size = f.size
        f.seek(max(0, size - 8))
        tail = f.read(8)
        if len(tail) != 8 or tail[4:] != b"PAR1":
            raise ValueError(f"{uri}: not a Parquet file (the pool must be contract Parquet)")
        footer_len = int.from_bytes(tail[:4], "little")
        f.seek(max(0, size - 8 - footer_len))
        footer = f.read(footer_len)
        rows = pq.ParquetFile(f).metadata.num_rows
    digest = hashlib.sha256(str(size).encode() + b"\0" + footer).hexdigest()
    return {"uri": uri, "bytes": size, "rows": rows, "sha256": digest, "hash_of": "size + parquet footer"}


def read_sidecar(
    uri: str, fingerprint: str, rows: int | None, storage_options: Mapping[str, Any] | None = None
) -> np.ndarray | None:
    """Cached counts, or None when there is no sidecar or it belongs to another version of the shard."""
    try:
        with parquet_file(uri, storage_options) as pf:
            meta = pf.schema_arrow.metadata or {}
            if meta.get(FINGERPRINT_KEY, b"").decode() != fingerprint:
                return None
            counts = pf.read(columns=["n_tokens"]).column(0).to_numpy().astype(np.int64)
    except FileNotFoundError:
        return None
    if rows is not None and len(counts) != rows:
        return None
    return counts


def count_shard(
    shard_uri: str,
    spec: TokenizerSpec,
    storage_options: Mapping[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    write_to: str | None = None,
) -> dict[str, Any]:
    """Count tokens of every document of a pool shard into its sidecar (skipped when cached);
    `write_to`: where to write counts that are not cached instead (a dry run leaves the pool alone)."""
    fp = fingerprint or shard_fingerprint(shard_uri, storage_options)
    target = sidecar_uri(shard_uri, spec, storage_options)
    cached = read_sidecar(target, fp["sha256"], fp["rows"], storage_options)
    target = target if cached is not None or write_to is None else write_to
    if cached is not None:
        return {
            "shard": shard_uri,
            "sidecar": target,
            "docs": len(cached),
            "tokens": int(cached.sum()),
            "cached": True,
        }
    ids, counts = [], []
    for table in read_documents(
        shard_uri, batch_rows=spec.batch_docs, columns=["id", "text"], storage_options=storage_options
    ):
        texts = [t or "" for t in table.column("text").to_pylist()]
        counts.append(count_batch(texts, spec, storage_options))
        ids.append(table.column("id").combine_chunks().cast(pa.string()))
    n_tokens = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    table = pa.table(
        {"id": pa.concat_arrays(ids) if ids else pa.array([], pa.string()), "n_tokens": pa.array(n_tokens, pa.int64())}
    )
    table = table.replace_schema_metadata(
        {FINGERPRINT_KEY: fp["sha256"].encode(), b"mixforge.tokenizer": tokenizer_key(spec, storage_options).encode()}
    )
    write_parquet(target, table, storage_options, compression="zstd")
    return {
        "shard": shard_uri,
        "sidecar": target,
        "docs": len(n_tokens),
        "tokens": int(n_tokens.sum()),
        "cached": False,
    }
