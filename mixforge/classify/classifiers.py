"""What a classifier is to the classify stage, and the registry of kinds.

A classifier kind is one class (`Classifier`): the columns it writes and how the report shows
them, which model cards it applies, how it loads its model (once per worker) and how it scores
a batch. `@register_classifier` makes its `kind` a value `ClassifierSpec.kind` accepts; the
stage, the composite and the report then need no change. The two fastText kinds:

- `binary-quality` (`FastTextQuality`): `quality_<name>` (float32), the positive label's probability;
- `multiclass-domain` (`FastTextDomain`): the top label and its probability, as `domain` and
  `domain_score` when it is the only multiclass-domain classifier, else `<name>_label` and
  `<name>_score`.

`<name>` is the classifier's name with dashes as underscores (`column_name`). Embedding clusters
(`EmbeddingClusters`: `cluster_id`, `cluster_distance`) are a classifier too, built from
`classify.embedding_clusters` rather than from a spec, so not a registered kind.

Adding a kind (a regression score, a transformer classifier):

    @register_classifier
    class EduScore(Classifier):
        kind = "edu-score"
        card_kinds = ("edu-score",)
        def columns(self): return [OutputColumn(f"edu_{column_name(self.name)}", pa.float32(), HISTOGRAM)]
        def setup(self, storage_options): ...   # load the model, once per worker
        def score(self, text): return {...}     # column name -> Arrow array, one value per row
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa

from mixforge.classify import clusters as cl
from mixforge.classify import store
from mixforge.classify.config import ClassifierSpec, EmbeddingClustersConfig, PreprocessConfig
from mixforge.classify.fasttext_model import MODEL_FILE, FastTextClassifier
from mixforge.classify.preprocess import preprocess
from mixforge.schema import CLUSTER_DISTANCE, CLUSTER_ID, DOMAIN, DOMAIN_SCORE

# How the report shows a column: a histogram per source over [0, 1] (a score), a count per value
# (a label), or not at all.
HISTOGRAM, DISTRIBUTION = "histogram", "distribution"
Report = Literal["histogram", "distribution"] | None


@dataclass(frozen=True)
class OutputColumn:
    name: str
    type: pa.DataType
    report: Report = None


def column_name(name: str) -> str:
    """A classifier name as it appears in column names (dashes are not valid in most query languages)."""
    return name.replace("-", "_")


class BatchText:
    """A batch's text column and its preprocessed forms, each computed once however many models use it."""

    def __init__(self, text: pa.ChunkedArray | pa.Array) -> None:
        self.raw = text
        self._prepared: dict[PreprocessConfig, list[str]] = {}

    def __len__(self) -> int:
        return len(self.raw)

    def prepared(self, settings: PreprocessConfig) -> list[str]:
        if settings not in self._prepared:
            self._prepared[settings] = preprocess(self.raw, settings).to_pylist() if len(self.raw) else []
        return self._prepared[settings]


class Classifier(ABC):
    """One configured classifier over one model version.

    Built on the driver when the stage is built (so a bad card fails before any work), sent to the
    workers unloaded, loaded there by `setup` (once per worker), then `score`d batch by batch.
    """

    kind: ClassVar[str]  # the `ClassifierSpec.kind` value naming this class (and the summary's `kind`)
    card_kinds: ClassVar[tuple[str, ...]] = ()  # model-card kinds it can apply
    model_file: ClassVar[str] = MODEL_FILE  # the file whose sha256 the stage summary records

    def __init__(self, spec: ClassifierSpec | None, version: store.ModelVersion, peers: int = 1) -> None:
        """`peers`: how many classifiers of this kind the stage applies (this one included)."""
        self.spec = spec
        self.version = version
        self.peers = peers
        self.check_card()

    @property
    def name(self) -> str:
        return self.spec.name

    @abstractmethod
    def columns(self) -> list[OutputColumn]:
        """The columns `score` returns, in the order they are added to the table."""

    def check_card(self) -> None:
        """Raise ValueError when the model version cannot be applied as this classifier."""
        if self.version.card.get("kind") not in self.card_kinds:
            raise ValueError(
                f"classifier {self.name!r}: {self.version.uri} is a {self.version.card.get('kind')!r} model; "
                f"a {self.kind} classifier applies {' or '.join(map(repr, self.card_kinds))} models"
            )

    def setup(self, storage_options: Mapping[str, Any] | None) -> None:  # noqa: B027 - optional hook, no-op by default
        """Load the model (called on each worker before its first batch; must be idempotent)."""

    @abstractmethod
    def score(self, text: BatchText) -> dict[str, pa.Array]:
        """{column name: one value per row of the batch} for every column of `columns()`."""

    def used(self) -> dict:
        """The version applied, for the stage summary and the report."""
        return {
            "uri": self.version.uri,
            "version": self.version.version,
            "kind": self.kind,
            "sha256": self.version.card.get("files", {}).get(self.model_file, {}).get("sha256"),
        }


CLASSIFIERS: dict[str, type[Classifier]] = {}


def register_classifier(cls: type[Classifier]) -> type[Classifier]:
    """Make `cls.kind` a classifier kind the config accepts (a class decorator)."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__}: a registered classifier needs a `kind` string")
    if CLASSIFIERS.get(kind, cls) is not cls:
        raise ValueError(f"classifier kind {kind!r} is already registered by {CLASSIFIERS[kind].__name__}")
    CLASSIFIERS[kind] = cls
    return cls


def build_classifiers(
    specs: Sequence[ClassifierSpec], storage_options: Mapping[str, Any] | None = None
) -> list[Classifier]:
    """The configured classifiers, in config order, each over its model resolved to one version."""
    peers = Counter(spec.kind for spec in specs)
    return [
        CLASSIFIERS[spec.kind](spec, store.resolve(spec.model, storage_options), peers[spec.kind]) for spec in specs
    ]


def report_columns(classifiers: Sequence[Classifier]) -> dict[str, list[str]]:
    """{"scores": [columns shown as histograms], "labels": [columns shown as distributions]}, in classifier order."""
    written = [c for clf in classifiers for c in clf.columns()]
    return {
        "scores": [c.name for c in written if c.report == HISTOGRAM],
        "labels": [c.name for c in written if c.report == DISTRIBUTION],
    }


# ----------------------------------------------------------------------------- fastText


class _FastText(Classifier):
    """A fastText model trained by `mixforge train-classifier` (either kind of card applies)."""

    card_kinds = ("binary-quality", "multiclass-domain")

    def __init__(self, spec: ClassifierSpec, version: store.ModelVersion, peers: int = 1) -> None:
        super().__init__(spec, version, peers)
        self.model = FastTextClassifier(version)

    def check_card(self) -> None:
        if self.version.card.get("kind") not in self.card_kinds:
            raise ValueError(
                f"classifier {self.name!r}: {self.version.uri} is not a fastText classifier "
                f"(kind {self.version.card.get('kind')!r})"
            )

    def setup(self, storage_options: Mapping[str, Any] | None) -> None:
        self.model.load(storage_options)

    def probabilities(self, text: BatchText) -> np.ndarray:
        return self.model.probabilities(text.prepared(self.model.preprocess))


@register_classifier
class FastTextQuality(_FastText):
    kind = "binary-quality"

    def check_card(self) -> None:
        super().check_card()
        card = self.version.card
        self.positive = self.spec.positive_label or card.get("positive_label")
        if self.positive is None:
            raise ValueError(
                f"classifier {self.name!r}: model {self.version.uri} records no positive label; set positive_label"
            )
        if self.positive not in card.get("labels", []):
            raise ValueError(
                f"classifier {self.name!r}: positive label {self.positive!r} is not one of {card.get('labels')}"
            )

    def columns(self) -> list[OutputColumn]:
        return [OutputColumn(f"quality_{column_name(self.name)}", pa.float32(), HISTOGRAM)]

    def score(self, text: BatchText) -> dict[str, pa.Array]:
        probs = self.probabilities(text)
        (quality,) = self.columns()
        return {quality.name: pa.array(probs[:, self.model.labels.index(self.positive)], pa.float32())}


@register_classifier
class FastTextDomain(_FastText):
    kind = "multiclass-domain"

    def columns(self) -> list[OutputColumn]:
        label, score = (
            (DOMAIN, DOMAIN_SCORE)
            if self.peers == 1
            else (f"{column_name(self.name)}_label", f"{column_name(self.name)}_score")
        )
        return [OutputColumn(label, pa.string(), DISTRIBUTION), OutputColumn(score, pa.float32(), HISTOGRAM)]

    def score(self, text: BatchText) -> dict[str, pa.Array]:
        probs = self.probabilities(text)
        n = len(text)
        best = np.argmax(probs, axis=1) if n else np.zeros(0, dtype=np.int64)
        label, score = self.columns()
        return {
            label.name: pa.array(np.array(self.model.labels, dtype=object)[best].tolist(), pa.string()),
            score.name: pa.array(probs[np.arange(n), best], pa.float32()),
        }


# ----------------------------------------------------------------------------- embedding clusters


class EmbeddingClusters(Classifier):
    """Every document embedded and assigned its nearest fitted centroid: `cluster_id` (int32) and
    `cluster_distance` (float32, squared euclidean distance of the unit-length embedding to the
    centroid, = 2 - 2 cos). Built from `classify.embedding_clusters`, not from a `ClassifierSpec`."""

    kind = "embedding-clusters"
    card_kinds = ("embedding-clusters",)
    model_file = cl.CENTROIDS_FILE

    def __init__(self, config: EmbeddingClustersConfig, version: store.ModelVersion, threads: int = 1) -> None:
        self.config = config
        self.threads = threads
        super().__init__(None, version)
        self._embedder = None
        self._centroids: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.version.name

    def check_card(self) -> None:
        if self.version.card.get("kind") not in self.card_kinds:
            raise ValueError(
                f"{self.version.uri} is not an embedding-clusters model (kind {self.version.card.get('kind')!r})"
            )

    def columns(self) -> list[OutputColumn]:
        return [OutputColumn(CLUSTER_ID, pa.int32(), DISTRIBUTION), OutputColumn(CLUSTER_DISTANCE, pa.float32())]

    def setup(self, storage_options: Mapping[str, Any] | None) -> None:
        if self._embedder is not None:
            return
        from mixforge.classify.embed import get_embedder

        emb = self.config
        self._centroids = cl.load_centroids(self.version, storage_options)
        self._embedder = get_embedder(
            emb.model,
            emb.device,
            emb.batch_size,
            int(self.version.card.get("max_chars", emb.max_chars)),
            threads=self.threads,
        )
        if self._embedder.dim != self._centroids.shape[1]:
            raise ValueError(
                f"{self.version.uri}: centroids have {self._centroids.shape[1]} dimensions, "
                f"the embedding model {self._embedder.dim}"
            )

    def score(self, text: BatchText) -> dict[str, pa.Array]:
        ids, dist = cl.assign(self._embedder.embed(text.raw.to_pylist()), self._centroids)
        return {
            CLUSTER_ID: pa.array(ids.astype(np.int32), pa.int32()),
            CLUSTER_DISTANCE: pa.array(dist.astype(np.float32), pa.float32()),
        }

    def top_terms(self) -> dict[int, list[str]]:
        """Each cluster's distinctive terms (from the card), to name it."""
        return {c["id"]: c["top_terms"] for c in self.version.card["clusters"]}
