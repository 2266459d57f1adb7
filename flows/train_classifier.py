"""train_classifier: labelled documents -> fastText classifier -> `{output}/models/{name}/vNNNN/`."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.parameters import StoreUri
from mixforge.classify.config import TrainClassifierConfig
from tasks.train_classifier import publish_model_card, train_classifier_task


@flow(name="train_classifier", validate_parameters=True)
def train_classifier(
    name: Annotated[str, Field(examples=["quality"])],
    output: StoreUri,
    positive: Annotated[list[str] | None, Field(examples=[["s3://labels/good/*.jsonl"]])] = None,
    negative: Annotated[list[str] | None, Field(examples=[["s3://labels/bad/*.jsonl"]])] = None,
    input: Annotated[list[str] | None, Field(examples=[["s3://labels/rated.parquet"]])] = None,
    label_column: Annotated[str | None, Field(examples=["label"])] = None,
    config: Annotated[
        TrainClassifierConfig, Field(examples=[{"test_fraction": 0.2, "fasttext": {"epoch": 25, "wordNgrams": 2}}])
    ] = TrainClassifierConfig(),
) -> dict:
    """Train a fastText classifier and store it as the next version under `{output}/models/{name}/`.

    Args:
        name: The model's name (lowercase letters, digits, dashes); versions go under `{output}/models/{name}/`.
        output: The store root.
        positive: Documents of the positive class (high quality): URIs or globs of shards.
        negative: Documents of the negative class: URIs or globs of shards.
        input: Instead of `positive`/`negative`: labelled shards, the label in `label_column`.
        label_column: The column of `input` holding each document's label.
        config: Training settings: model kind, held-out split, preprocessing, fastText hyper-parameters.
    """
    card = train_classifier_task(name, output, positive, negative, input, label_column, config)
    publish_model_card(card)
    get_run_logger().info("model %s %s -> %s", name, card["version"], card["uri"])
    return {
        "model": card["uri"],
        "name": name,
        "version": card["version"],
        "metrics": card["metrics"],
        "model_bin": card["uri"].rstrip("/") + "/model.bin",
    }
