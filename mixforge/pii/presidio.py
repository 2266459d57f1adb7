"""The optional NER backend of the `pii` stage: names, places (any Presidio entity) through Presidio.

Not in mixforge's lock: a deployment that sets `extra_stages.pii.ner` installs `presidio-analyzer` and a spaCy
pipeline with an NER component in the workers' environment, e.g.

    pip install presidio-analyzer && python -m spacy download en_core_web_lg

(`en_core_web_lg` is Presidio's default English model; `en_core_web_trf` is more accurate and slower). The
model is a spaCy package name or a local directory (`nlp.to_disk`); nothing is downloaded at run time.
Presidio runs document by document in Python: expect spaCy's speed, far below the regex entities'.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mixforge.pii.config import PresidioConfig


class PresidioMissing(ImportError):
    """presidio-analyzer (or the spaCy model it needs) is not installed where the stage runs."""


INSTALL = (
    "the pii stage's NER backend needs presidio-analyzer and a spaCy NER pipeline in the workers' environment: "
    "pip install presidio-analyzer && python -m spacy download en_core_web_lg (or set ner.spacy_model to a "
    "local pipeline directory); or remove extra_stages.pii.ner"
)


class PresidioBackend:
    def __init__(self, config: PresidioConfig) -> None:
        try:
            import spacy
            from presidio_analyzer import AnalyzerEngine
            from presidio_analyzer.nlp_engine import SpacyNlpEngine
        except ImportError as e:
            raise PresidioMissing(f"{INSTALL} ({e})") from e
        model = config.spacy_model
        if not (spacy.util.is_package(model) or Path(model).exists()):  # Presidio would download it
            raise PresidioMissing(f"spaCy pipeline {model!r} is not installed: {INSTALL}")
        engine = SpacyNlpEngine(models=[{"lang_code": config.language, "model_name": model}])
        engine.load()
        self.config = config
        self.analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=[config.language])

    def find(self, text: pl.Series) -> pl.DataFrame:
        """(doc, entity, start, end, value) of every entity Presidio finds above the score threshold."""
        c = self.config
        rows: list[tuple[int, str, int, int, str]] = []
        for doc, value in enumerate(text.to_list()):
            if not value:
                continue
            for r in self.analyzer.analyze(
                text=value, language=c.language, entities=list(c.entities), score_threshold=c.score_threshold
            ):
                rows.append((doc, r.entity_type, r.start, r.end, value[r.start : r.end]))
        return pl.DataFrame(
            rows,
            schema={"doc": pl.Int64, "entity": pl.String, "start": pl.Int64, "end": pl.Int64, "value": pl.String},
            orient="row",
        )
