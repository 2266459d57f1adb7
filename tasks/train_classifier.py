"""Prefect task for training a fastText classifier into a model version, with its card as an artifact."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

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
        markdown=model_card_markdown(card),
        description=f"model {card['name']} {card['version']}: data, metrics, parameters",
    )


def model_card_markdown(card: dict) -> str:
    m = card["metrics"]
    lines = [
        f"# Model `{card['name']}` {card['version']}",
        "",
        f"- kind: {card['kind']}; labels: {', '.join(card['labels'])}"
        + (f"; positive label: `{card['positive_label']}`" if card.get("positive_label") else ""),
        f"- uri: `{card['uri']}`",
        f"- model.bin sha256: `{card['files']['model.bin']['sha256']}` "
        f"({card['files']['model.bin']['bytes']:,} bytes)",
        f"- created {card['created']} by mixforge {card['code_version']}",
        "",
        "## Held-out metrics",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    for key in ("auc", "precision", "recall", "accuracy", "n_test"):
        value = m.get(key)
        lines.append(f"| {key} | {value if not isinstance(value, float) else f'{value:.4f}'} |")
    lines += ["", "## Documents per label", "", "| label | train | test |", "|---|---:|---:|"]
    for label, n in card["data"]["docs_per_label"].items():
        lines.append(f"| {label} | {n['train']:,} | {n['test']:,} |")
    lines += ["", "## Inputs", "", "| pattern | label | shards | docs used |", "|---|---|---:|---:|"]
    for inp in card["data"]["inputs"]:
        lines.append(
            f"| `{inp['pattern']}` | {inp['label'] or '(column ' + str(card['data']['label_column']) + ')'} "
            f"| {len(inp['shards'])} | {inp['docs_used']:,} |"
        )
    lines += ["", "## fastText parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in card["fasttext"].items()]
    lines += ["", f"Preprocessing: {card['preprocess']}"]
    return "\n".join(lines) + "\n"
