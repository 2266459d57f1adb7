"""The readable model card of a fastText classifier: `card.md` beside `card.json`, and the Prefect artifact.

Rendered from the card itself (`card.json` is the record; this is its view for people): what the
model is for, how to load it, its held-out metrics, the data (sizes, label balance, inputs), the
recipe (preprocessing and fastText parameters) and where it came from.
"""

from __future__ import annotations

import json


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "n/a" if value is None else str(value)


def _load_snippet(card: dict) -> list[str]:
    uri = card["uri"]
    if card["kind"] == "binary-quality":
        use = f'scores = model.score_texts(texts)[:, model.labels.index("{card["positive_label"]}")]'
        stage = (
            f"    - {{name: {card['name']}, model: {uri}, kind: binary-quality}}"
            f"   # writes quality_{card['name'].replace('-', '_')}"
        )
    else:
        use = "probabilities = model.score_texts(texts)  # columns in model.labels order"
        stage = (
            f"    - {{name: {card['name']}, model: {uri}, kind: multiclass-domain}}   # writes domain, domain_score"
        )
    return [
        "## How to load it",
        "",
        "In Python (the card's preprocessing is applied for you; texts are raw documents):",
        "",
        "```python",
        "from mixforge.classify.fasttext_model import FastTextClassifier",
        "",
        f'model = FastTextClassifier.open("{uri}")',
        'texts = ["A raw document, as it is stored.", "Another one."]',
        use,
        "```",
        "",
        "In a curate config (the classify stage):",
        "",
        "```yaml",
        "classify:",
        "  classifiers:",
        stage,
        "```",
        "",
        f'With fastText alone: `fasttext.load_model("{uri}/model.bin")`, on text prepared exactly as '
        "`mixforge.classify.preprocess.preprocess` does with the preprocessing below (lower-cased, punctuation "
        "split off, one line); other text gives other scores.",
        "",
    ]


def classifier_card_markdown(card: dict) -> str:
    """Markdown of a classifier card (as `classify.store.publish` completes it)."""
    m, data, training = card["metrics"], card.get("data", {}), card.get("training", {})
    per_label = data.get("docs_per_label", {})
    total = sum(n["train"] + n["test"] for n in per_label.values())
    model_file = card["files"].get("model.bin", {})
    labels = ", ".join(f"`{label}`" for label in card["labels"])
    lines = [
        f"# Model `{card['name']}` {card['version']}",
        "",
        f"A fastText **{card['kind']}** classifier. Labels: {labels}"
        + (f"; the score is the probability of `{card['positive_label']}`." if card.get("positive_label") else "."),
        "",
        f"- uri: `{card['uri']}`",
        f"- model.bin: {_number(model_file.get('bytes'))} bytes, sha256 `{model_file.get('sha256')}`",
        f"- created {card['created']} by mixforge {card['code_version']} (build `{card['build_id']}`)",
        "",
        *_load_snippet(card),
        "## Held-out metrics",
        "",
        f"Measured on {_number(m.get('n_test'))} held-out documents "
        f"({_number(training.get('test_fraction'))} of the data, chosen by a hash of the document id with seed "
        f"{training.get('split_seed')}), scored by a model trained on the other documents with the same recipe."
        + (
            f" The shipped model was then trained on all {_number(training['docs_shipped_model'])} documents."
            if "docs_shipped_model" in training
            else ""
        ),
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    for key in ("auc", "precision", "recall", "accuracy", "threshold", "n_test"):
        if key in m:
            lines.append(f"| {key} | {_number(m[key])} |")
    if m.get("averaging"):
        lines += ["", f"Averaging: {m['averaging']}."]
    if m.get("confusion"):
        c = m["confusion"]
        lines += [
            "",
            f"Confusion at threshold {_number(m.get('threshold'))}: "
            f"{c['tp']} true positives, {c['fp']} false positives, "
            f"{c['fn']} false negatives, {c['tn']} true negatives.",
        ]
    if m.get("per_label"):
        lines += ["", "| label | precision | recall | auc | n_test |", "|---|---:|---:|---:|---:|"]
        for label, v in m["per_label"].items():
            lines.append(
                f"| {label} | {_number(v['precision'])} | {_number(v['recall'])} | {_number(v['auc'])} "
                f"| {_number(v['n_test'])} |"
            )
    lines += [
        "",
        "## Data",
        "",
        "| label | train | held out | total | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, n in per_label.items():
        both = n["train"] + n["test"]
        lines.append(
            f"| {label} | {_number(n['train'])} | {_number(n['test'])} | {_number(both)} "
            f"| {both / total if total else 0:.1%} |"
        )
    lines.append(
        f"| all | {_number(sum(n['train'] for n in per_label.values()))} "
        f"| {_number(sum(n['test'] for n in per_label.values()))} | {_number(total)} | 100.0% |"
    )
    if data.get("docs_skipped"):
        lines += ["", "Skipped: " + ", ".join(f"{k} {_number(v)}" for k, v in sorted(data["docs_skipped"].items()))]
    if data.get("inputs"):
        lines += ["", "| input | label | shards | documents used |", "|---|---|---:|---:|"]
        for inp in data["inputs"]:
            label = inp["label"] or f"(column `{data.get('label_column')}`)"
            lines.append(f"| `{inp['pattern']}` | {label} | {len(inp['shards'])} | {_number(inp['docs_used'])} |")
    lines += [
        "",
        "## Recipe",
        "",
        "Preprocessing (applied identically when the model is used): "
        + ", ".join(f"{k}={json.dumps(v)}" for k, v in card["preprocess"].items())
        + ".",
        "",
        "| fastText parameter | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in card["fasttext"].items()]
    if training:
        shown = {k: v for k, v in training.items() if k not in ("diverged", "shipped_model")}
        lines += ["", "Training: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in shown.items()) + "."]
    for attempt in training.get("diverged", []):
        lines.append(f"- diverged ({attempt['model']} model) at lr={attempt['lr']:g}, retried at half the rate")
    return "\n".join(lines) + "\n"
