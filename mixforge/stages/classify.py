"""classify: any number of fastText classifiers and embedding clusters in one pass (issue #5).

Score, then select: this stage only writes columns, it never drops a document.

Columns written (stable names; `<name>` is the classifier's name with dashes as underscores):
- `quality_<name>` (float32): binary-quality models, probability of the positive label.
- `domain` (string), `domain_score` (float32): the multiclass-domain model's top label and its
  probability, when one is configured; with several, `<name>_label` / `<name>_score` each.
- `cluster_id` (int32), `cluster_distance` (float32, squared euclidean distance of the unit-length
  embedding to its centroid, = 2 - 2 cos): when `embedding_clusters` is enabled.

Every batch also adds its report figures (score histograms per source, label counts) to the
shard's `figures`, which the runner sums into the stage summary.

Models are resolved to concrete versions when the stage is built (a run never mixes versions, and
the versions are recorded in the stage summary), and loaded in `setup()`, once per worker. Each
document is prepared once per distinct preprocessing setting, whatever the number of models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge import schema as S
from mixforge.classify import clusters as cl
from mixforge.classify import report as rp
from mixforge.classify import store
from mixforge.classify.config import ClassifierSpec, ClassifyConfig, PreprocessConfig
from mixforge.classify.fasttext_model import FastTextClassifier
from mixforge.classify.preprocess import preprocess
from mixforge.stage import Resources, ShardContext, Stage, StageResult

CLUSTER_ID, CLUSTER_DISTANCE = "cluster_id", "cluster_distance"
DOMAIN, DOMAIN_SCORE = "domain", "domain_score"


def column_name(name: str) -> str:
    return name.replace("-", "_")


def output_columns(config: ClassifyConfig) -> dict[str, list[str]]:
    """{"scores": [...float columns in [0, 1]], "labels": [...categorical columns]} this config writes."""
    scores, labels = [], []
    multiclass = [c for c in config.classifiers if c.kind == "multiclass-domain"]
    for spec in config.classifiers:
        if spec.kind == "binary-quality":
            scores.append(f"quality_{column_name(spec.name)}")
        elif len(multiclass) == 1:
            labels.append(DOMAIN)
            scores.append(DOMAIN_SCORE)
        else:
            labels.append(f"{column_name(spec.name)}_label")
            scores.append(f"{column_name(spec.name)}_score")
    if config.embedding_clusters.enabled:
        labels.append(CLUSTER_ID)
    return {"scores": scores, "labels": labels}


class ClassifyStage(Stage):
    name = "classify"
    reads = (S.TEXT,)

    def __init__(self, config: ClassifyConfig, storage_options: Mapping[str, Any] | None = None,
                 centroids: str | None = None, gpus: float = 0.0) -> None:
        """`centroids`: fitted cluster centroids (a version URI) when `embedding_clusters` is enabled;
        default: `config.embedding_clusters.centroids`. `gpus`: Ray GPUs per worker for embedding."""
        self.config = config
        self.storage_options = dict(storage_options or {})
        self.resources = Resources(cpus=1.0, gpus=gpus)
        self._specs: list[tuple[ClassifierSpec, store.ModelVersion]] = []
        n_multiclass = sum(c.kind == "multiclass-domain" for c in config.classifiers)
        for spec in config.classifiers:
            version = store.resolve(spec.model, self.storage_options)
            _check_card(spec, version, n_multiclass)
            self._specs.append((spec, version))
        self.clusters: store.ModelVersion | None = None
        emb = config.embedding_clusters
        if emb.enabled:
            uri = centroids or emb.centroids
            if uri is None:
                raise ValueError("embedding_clusters is enabled but no fitted centroids were given: run the classify "
                                 "task (it fits them) or set embedding_clusters.centroids")
            self.clusters = store.resolve(uri, self.storage_options)
            if self.clusters.card.get("kind") != "embedding-clusters":
                raise ValueError(f"{self.clusters.uri} is not an embedding-clusters model (kind {self.clusters.card.get('kind')!r})")
        self.columns = output_columns(config)
        self.writes = tuple(self.columns["scores"] + self.columns["labels"]) + ((CLUSTER_DISTANCE,) if emb.enabled else ())
        self._models: list[FastTextClassifier] | None = None
        self._embedder = None
        self._centroids: np.ndarray | None = None

    def models_used(self) -> dict[str, dict]:
        """Concrete versions applied, for the stage summary."""
        used = {spec.name: {"uri": v.uri, "version": v.version, "kind": spec.kind,
                            "sha256": v.card.get("files", {}).get("model.bin", {}).get("sha256")} for spec, v in self._specs}
        if self.clusters is not None:
            used[self.clusters.name] = {"uri": self.clusters.uri, "version": self.clusters.version, "kind": "embedding-clusters",
                                        "sha256": self.clusters.card.get("files", {}).get(cl.CENTROIDS_FILE, {}).get("sha256")}
        return used

    def setup(self) -> None:
        if self._models is None:
            models = []
            for _, version in self._specs:
                m = FastTextClassifier(version)
                m.load(self.storage_options)
                models.append(m)
            self._models = models
        if self.clusters is not None and self._embedder is None:
            from mixforge.classify.embed import get_embedder

            emb = self.config.embedding_clusters
            self._centroids = cl.load_centroids(self.clusters, self.storage_options)
            self._embedder = get_embedder(emb.model, emb.device, emb.batch_size, int(self.clusters.card.get("max_chars", emb.max_chars)),
                                          threads=max(1, int(self.resources.cpus)))
            if self._embedder.dim != self._centroids.shape[1]:
                raise ValueError(f"{self.clusters.uri}: centroids have {self._centroids.shape[1]} dimensions, "
                                 f"the embedding model {self._embedder.dim}")

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        self.setup()
        n = batch.num_rows
        text = batch.column(S.TEXT)
        columns: dict[str, pa.Array] = {}
        prepared: dict[PreprocessConfig, list[str]] = {}
        n_multiclass = sum(s.kind == "multiclass-domain" for s, _ in self._specs)
        for (spec, _), model in zip(self._specs, self._models):
            if model.preprocess not in prepared:
                prepared[model.preprocess] = preprocess(text, model.preprocess).to_pylist() if n else []
            probs = model.probabilities(prepared[model.preprocess])
            if spec.kind == "binary-quality":
                positive = spec.positive_label or model.version.card["positive_label"]
                columns[f"quality_{column_name(spec.name)}"] = pa.array(probs[:, model.labels.index(positive)], pa.float32())
            else:
                best = np.argmax(probs, axis=1) if n else np.zeros(0, dtype=np.int64)
                label_col, score_col = (DOMAIN, DOMAIN_SCORE) if n_multiclass == 1 else (
                    f"{column_name(spec.name)}_label", f"{column_name(spec.name)}_score")
                columns[label_col] = pa.array(np.array(model.labels, dtype=object)[best].tolist(), pa.string())
                columns[score_col] = pa.array(probs[np.arange(n), best], pa.float32())
        if self._embedder is not None:
            vectors = self._embedder.embed(text.to_pylist())
            ids, dist = cl.assign(vectors, self._centroids)
            columns[CLUSTER_ID] = pa.array(ids.astype(np.int32), pa.int32())
            columns[CLUSTER_DISTANCE] = pa.array(dist.astype(np.float32), pa.float32())
        for name, values in columns.items():  # a rerun over already-classified shards overwrites the columns
            if name in batch.column_names:
                batch = batch.set_column(batch.column_names.index(name), name, values)
            else:
                batch = batch.append_column(name, values)
        # the report's histograms and distributions, counted here rather than by reading the output back
        ctx.add_figures(rp.table_figures(batch, self.columns["scores"], self.columns["labels"], self.config.histogram_bins))
        return StageResult(batch)


def _check_card(spec: ClassifierSpec, version: store.ModelVersion, n_multiclass: int) -> None:
    card = version.card
    if card.get("kind") not in ("binary-quality", "multiclass-domain"):
        raise ValueError(f"classifier {spec.name!r}: {version.uri} is not a fastText classifier (kind {card.get('kind')!r})")
    if spec.kind == "binary-quality":
        positive = spec.positive_label or card.get("positive_label")
        if positive is None:
            raise ValueError(f"classifier {spec.name!r}: model {version.uri} records no positive label; set positive_label")
        if positive not in card.get("labels", []):
            raise ValueError(f"classifier {spec.name!r}: positive label {positive!r} is not one of {card.get('labels')}")
