"""train_classifier: labelled documents -> fastText classifier -> `<output>/models/<name>/vNNNN/`."""

from __future__ import annotations

from prefect import flow, get_run_logger

from mixforge.classify.config import TrainClassifierConfig
from tasks.train_classifier import publish_model_card, train_classifier_task


@flow(name="train_classifier", validate_parameters=True)
def train_classifier(
    name: str,
    output: str,
    positive: list[str] | None = None,
    negative: list[str] | None = None,
    input: list[str] | None = None,
    label_column: str | None = None,
    config: TrainClassifierConfig = TrainClassifierConfig(),
) -> dict:
    """Train model `name` from positive/negative sets (URIs or globs), or `input` shards with a `label_column`,
    and store it as the next version under `<output>/models/<name>/`."""
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
