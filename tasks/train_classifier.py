"""Prefect task for training a fastText classifier into a model version, with its card as an artifact."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mixforge.classify.card import classifier_card_markdown
from mixforge.classify.config import TrainClassifierConfig
from mixforge.classify.train import train_classifier
from mixforge.names import artifact_key


@task(name="train-classifier", cache_policy=NO_CACHE)
def train_classifier_task(
    name: str,
    output: str,
    positive: Sequence[str] | None,
    negative: Sequence[str] | None,
    input: Sequence[str] | None,
    label_column: str | None,
    config: TrainClassifierConfig,
) -> dict:
    version = train_classifier(
        name, output, positive=positive, negative=negative, input=input, label_column=label_column, config=config
    )
    return version.card


@task(name="publish-model-card", cache_policy=NO_CACHE)
def publish_model_card(card: dict) -> None:
    create_markdown_artifact(
        key=artifact_key("model", card["name"]),
        markdown=classifier_card_markdown(card),  # the model's card.md
        description=f"model {card['name']} {card['version']}: data, metrics, parameters",
    )
