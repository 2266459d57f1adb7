"""k-means (k-means++ seeding, Lloyd iterations) and the top terms of each cluster: numpy only.

Kept free of mixforge's I/O imports (pydantic, polars, zstandard) so that it runs wherever numpy
does, e.g. a GPU machine checking embeddings. `mixforge.classify.clusters` re-exports it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

# Very common English words, left out of the top terms (they name no topic).
_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers him his how i
if in into is it its itself just me more most my no nor not now of off on once only or other our out over own same she
should so some such than that the their them then there these they this those through to too under until up very was we
were what when where which while who whom why will with would you your yours one two may must shall upon unto thee thou
thy ye said""".split()
)
_TOKEN = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, max_iter: int = 100, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, float]:
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
