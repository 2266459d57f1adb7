"""A trained fastText classifier version, loaded once per worker, scoring prepared text in batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mixforge.classify import store
from mixforge.classify.config import PreprocessConfig
from mixforge.classify.preprocess import preprocess

LABEL_PREFIX = "__label__"
MODEL_FILE = "model.bin"


def load_fasttext(path: str):
    from fasttext.FastText import _FastText  # fasttext-numpy2; _FastText avoids load_model's stderr warning

    return _FastText(model_path=path)


class FastTextClassifier:
    """Wraps one model version: `labels`, `preprocess` (from its card) and batched probabilities."""

    def __init__(self, version: store.ModelVersion) -> None:
        self.version = version
        card = version.card
        self.labels: list[str] = list(card["labels"])
        self.preprocess = PreprocessConfig(**card.get("preprocess", {}))
        self.model = None

    @classmethod
    def open(cls, uri: str, storage_options: Mapping[str, Any] | None = None) -> FastTextClassifier:
        """The model version at `uri` (a version folder, its model.bin, or a model folder: the latest), loaded."""
        classifier = cls(store.resolve(uri, storage_options))
        classifier.load(storage_options)
        return classifier

    def load(self, storage_options: Mapping[str, Any] | None = None) -> None:
        if self.model is None:
            self.model = load_fasttext(store.fetch(self.version, MODEL_FILE, storage_options))
            have = sorted(label.removeprefix(LABEL_PREFIX) for label in self.model.get_labels())
            if have != sorted(self.labels):
                raise ValueError(
                    f"{self.version.uri}: model labels {have} differ from its card's {sorted(self.labels)}"
                )

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, len(labels)) probabilities of raw texts, prepared with the card's preprocessing first."""
        return self.probabilities(preprocess(pa.array(list(texts), pa.string()), self.preprocess).to_pylist())

    def probabilities(self, prepared: list[str]) -> np.ndarray:
        """(n, len(labels)) probabilities, columns in `self.labels` order. `prepared` has no newlines."""
        n, k = len(prepared), len(self.labels)
        out = np.zeros((n, k), dtype=np.float32)
        if n == 0:
            return out
        pred_labels, pred_probs = self.model.predict(prepared, k=-1)
        probs = np.asarray(pred_probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != k:  # a ragged answer (should not happen with k=-1): slow path
            for i, (labs, ps) in enumerate(zip(pred_labels, pred_probs)):
                for lab, p in zip(labs, ps):
                    out[i, self.labels.index(lab.removeprefix(LABEL_PREFIX))] = p
            return out
        index = {LABEL_PREFIX + label: j for j, label in enumerate(self.labels)}
        cols = np.fromiter((index[lab] for labs in pred_labels for lab in labs), dtype=np.int64, count=n * k).reshape(
            n, k
        )
        np.put_along_axis(out, cols, probs, axis=1)
        return np.minimum(out, 1.0)  # fastText adds 1e-5 smoothing: keep probabilities within [0, 1]
