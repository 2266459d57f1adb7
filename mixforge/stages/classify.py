"""classify: any number of classifiers and embedding clusters in one pass.

Score, then select: this stage only writes columns, it never drops a document. Each classifier
(`mixforge.classify.classifiers`: its kind's class says which columns) adds its columns; a
rerun over already-classified shards overwrites them in place. Embedding clusters, when
enabled, are the last classifier (`cluster_id`, `cluster_distance`).

Every batch also adds its report figures (score histograms per source, label counts) to the
shard's `figures`, which the runner sums into the stage summary.

Models are resolved to concrete versions when the stage is built (a run never mixes versions, and
the versions are recorded in the stage summary), and loaded in `setup()`, once per worker. Each
document is prepared once per distinct preprocessing setting, whatever the number of models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from mixforge import schema as S
from mixforge.classify import report as rp
from mixforge.classify import store
from mixforge.classify.classifiers import BatchText, Classifier, EmbeddingClusters, build_classifiers, report_columns
from mixforge.classify.config import ClassifyConfig
from mixforge.stage import Resources, ShardContext, Stage, StageResult


class ClassifyStage(Stage):
    name = "classify"
    reads = (S.TEXT,)

    def __init__(
        self,
        config: ClassifyConfig,
        storage_options: Mapping[str, Any] | None = None,
        centroids: str | None = None,
        resources: Resources = Resources(),
    ) -> None:
        """`centroids`: fitted cluster centroids (a version URI) when `embedding_clusters` is enabled;
        default: `config.embedding_clusters.centroids`. `resources`: what each worker takes (GPUs
        when it embeds on one)."""
        self.config = config
        self.storage_options = dict(storage_options or {})
        self.resources = resources
        self.classifiers: list[Classifier] = build_classifiers(config.classifiers, self.storage_options)
        self.clusters: EmbeddingClusters | None = None
        emb = config.embedding_clusters
        if emb.enabled:
            uri = centroids or emb.centroids
            if uri is None:
                raise ValueError(
                    "embedding_clusters is enabled but no fitted centroids were given: run the classify "
                    "task (it fits them) or set embedding_clusters.centroids"
                )
            self.clusters = EmbeddingClusters(
                emb, store.resolve(uri, self.storage_options), threads=max(1, int(resources.cpus))
            )
            self.classifiers.append(self.clusters)
        self.columns = report_columns(self.classifiers)
        self.writes = tuple(c.name for clf in self.classifiers for c in clf.columns())
        self._ready = False

    def models_used(self) -> dict[str, dict]:
        """Concrete versions applied, for the stage summary."""
        return {clf.name: clf.used() for clf in self.classifiers}

    def setup(self) -> None:
        if not self._ready:
            for clf in self.classifiers:
                clf.setup(self.storage_options)
            self._ready = True

    def process(self, batch: pa.Table, ctx: ShardContext) -> StageResult:
        self.setup()
        text = BatchText(batch.column(S.TEXT))
        for clf in self.classifiers:
            for name, values in clf.score(text).items():  # a rerun over classified shards overwrites the columns
                batch = S.set_column(batch, name, values)
        # the report's histograms and distributions, counted here rather than by reading the output back
        ctx.add_figures(
            rp.table_figures(batch, self.columns["scores"], self.columns["labels"], self.config.histogram_bins)
        )
        return StageResult(batch)
