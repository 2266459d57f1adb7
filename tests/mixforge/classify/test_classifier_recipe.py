"""The default classifier recipe (issue #16): the shipped model is trained on every labelled document after
the held-out evaluation, training lines are shuffled, a diverged training is retried at half the learning
rate, and the readable `card.md` beside `card.json` says what the model is, how to load it and how it was made.

Real fastText trainings on small generated sets (prose against keyword spam and menus), a few seconds each.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml

from mixforge.classify import store
from mixforge.classify.config import ClassifyConfig, TrainClassifierConfig
from mixforge.classify.fasttext_model import FastTextClassifier
from mixforge.classify.train import TrainingDiverged, _is_test, _shuffle_lines, train_classifier
from tests.helpers import prose, write_shard

# Small, fast, reproducible models (minCount 1: a word seen once is in the vocabulary).
FAST = {"fasttext": {"dim": 16, "bucket": 20_000, "epoch": 15, "thread": 1, "minCount": 1}}
HELD_OUT_WORD = "zyzzyvaheldout"


def _junk(i: int) -> str:
    rnd = random.Random(i)
    words = "buy cheap click free now win casino deal | home login cart sitemap".split()
    return " ".join(rnd.choice(words) for _ in range(rnd.randint(40, 80)))


@pytest.fixture
def sets(tmp_path):
    """120 prose and 120 junk documents; the held-out word is in one held-out positive document only."""
    pos = [{"id": f"pos-{i}", "text": prose(i)} for i in range(120)]
    neg = [{"id": f"neg-{i}", "text": _junk(i)} for i in range(120)]
    held_out = next(d for d in pos if _is_test(d["id"], 0, 0.1))  # the default split (seed 0, 10 %)
    held_out["text"] += f" {HELD_OUT_WORD}."
    write_shard(str(tmp_path / "pos.parquet"), pos)
    write_shard(str(tmp_path / "neg.parquet"), neg)
    return {"pos": str(tmp_path / "pos.parquet"), "neg": str(tmp_path / "neg.parquet"), "docs": pos + neg}


def test_the_shipped_model_learns_from_every_labelled_document(sets, tmp_path):
    v = train_classifier(
        "quality",
        str(tmp_path / "store"),
        positive=sets["pos"],
        negative=sets["neg"],
        config=TrainClassifierConfig(**FAST),
    )
    per_label = v.card["data"]["docs_per_label"]
    n_test = sum(n["test"] for n in per_label.values())
    assert 10 <= n_test <= 40 and v.card["metrics"]["n_test"] == n_test  # the metrics: held-out documents
    training = v.card["training"]
    assert training["docs_shipped_model"] == 240 and training["diverged"] == []
    model = FastTextClassifier.open(f"{tmp_path}/store/models/quality")
    # A word that only a held-out document has is in the shipped model's vocabulary: it saw that document.
    assert HELD_OUT_WORD in model.model.get_words()
    scores = model.score_texts([prose(10_001), _junk(10_001)])[:, model.labels.index("positive")]
    assert scores[0] > 0.8 > 0.2 > scores[1]
    # Trained twice (evaluated, then shipped) and still reproducible bit for bit with one thread.
    again = train_classifier(
        "quality",
        str(tmp_path / "store"),
        positive=sets["pos"],
        negative=sets["neg"],
        config=TrainClassifierConfig(**FAST),
    )
    assert again.card["files"]["model.bin"]["sha256"] == v.card["files"]["model.bin"]["sha256"]


def test_a_diverging_training_is_retried_at_half_the_learning_rate(sets, tmp_path):
    root = str(tmp_path / "store")
    config = TrainClassifierConfig(**{"fasttext": {**FAST["fasttext"], "lr": 1000.0}})  # diverges at 1000 and 500
    v = train_classifier("quality", root, positive=sets["pos"], negative=sets["neg"], config=config)
    diverged = v.card["training"]["diverged"]
    assert [(d["model"], d["lr"]) for d in diverged] == [("evaluated", 1000.0), ("evaluated", 500.0)]
    assert all("NaN" in d["error"] for d in diverged)
    assert v.card["fasttext"]["lr"] == 250.0  # the rate the shipped model was trained with
    assert "diverged (evaluated model) at lr=1000" in Path(v.uri, "card.md").read_text()

    # At every rate down to lr/8 it diverges: an error that says so, and no version.
    hopeless = TrainClassifierConfig(**{"fasttext": {**FAST["fasttext"], "lr": 1e6}})
    with pytest.raises(TrainingDiverged, match=r"diverged at every learning rate from 1e\+06 down to 125000"):
        train_classifier("hopeless", root, positive=sets["pos"], negative=sets["neg"], config=hopeless)
    assert store.list_versions(root, "hopeless") == []


def test_shuffled_training_lines_are_a_seeded_permutation(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(f"__label__positive a{i}\n" for i in range(50)))
    b.write_text("".join(f"__label__negative b{i}\n" for i in range(50)))
    out1, out2, out3 = (tmp_path / f"out{i}.txt" for i in range(3))
    assert _shuffle_lines([str(a), str(b)], str(out1), seed=0) == 100
    _shuffle_lines([str(a), str(b)], str(out2), seed=0)
    _shuffle_lines([str(a), str(b)], str(out3), seed=1)
    lines = out1.read_text().splitlines(keepends=True)
    assert sorted(lines) == sorted(a.read_text().splitlines(keepends=True) + b.read_text().splitlines(keepends=True))
    assert out1.read_text() == out2.read_text() != out3.read_text()
    # Mixed: the labels alternate often, not in two blocks as they were written.
    assert sum(x[:12] != y[:12] for x, y in zip(lines, lines[1:])) > 30


def test_card_md_beside_card_json_is_readable_and_its_snippet_runs(sets, tmp_path):
    v = train_classifier(
        "quality",
        str(tmp_path / "store"),
        positive=sets["pos"],
        negative=sets["neg"],
        config=TrainClassifierConfig(**FAST),
    )
    card = json.loads(Path(v.uri, "card.json").read_text())
    md = Path(v.uri, "card.md").read_text()
    m = card["metrics"]
    assert md.startswith("# Model `quality` v0001\n")
    assert "the score is the probability of `positive`" in md
    assert f"| auc | {m['auc']:.4f} |" in md and f"| n_test | {m['n_test']} |" in md
    # Data sizes and label balance: one row per label and a total.
    for label, n in card["data"]["docs_per_label"].items():
        assert f"| {label} | {n['train']} | {n['test']} | {n['train'] + n['test']} | 50.0% |" in md
    assert "| all |" in md and "| 240 | 100.0% |" in md
    assert f"The shipped model was then trained on all {card['training']['docs_shipped_model']} documents" in md
    # The recipe: every fastText parameter and the preprocessing.
    for key, value in card["fasttext"].items():
        assert f"| {key} | {value} |" in md
    assert "lowercase=true" in md and "split_punctuation=true" in md
    assert card["files"]["model.bin"]["sha256"] in md
    # How to load it: the Python snippet runs as written and scores the texts with the positive label.
    snippet = re.search(r"```python\n(.*?)```", md, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)
    scores = namespace["scores"]
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    # ...and the YAML block is a valid classify config naming this version.
    block = re.search(r"```yaml\n(.*?)```", md, re.S).group(1)
    spec = ClassifyConfig(**yaml.safe_load(block)["classify"]).classifiers[0]
    assert spec.model == v.uri and spec.kind == "binary-quality" and spec.name == "quality"


def test_card_md_of_a_multiclass_model_lists_each_label(tmp_path):
    topics = {"prose": prose, "junk": _junk, "digits": lambda i: " ".join(str(i * 7 + k) for k in range(60))}
    rows = [{"id": f"{t}-{i}", "text": make(i), "topic": t} for t, make in topics.items() for i in range(60)]
    write_shard(str(tmp_path / "labelled.parquet"), rows)
    v = train_classifier(
        "topics",
        str(tmp_path / "store"),
        input=str(tmp_path / "labelled.parquet"),
        label_column="topic",
        config=TrainClassifierConfig(**FAST),
    )
    md = Path(v.uri, "card.md").read_text()
    assert "A fastText **multiclass-domain** classifier. Labels: `digits`, `junk`, `prose`." in md
    assert "Averaging: macro over labels, one-vs-rest AUC." in md
    for label, n in v.card["metrics"]["per_label"].items():
        assert re.search(rf"^\| {label} \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| {n['n_test']} \|$", md, re.M)
    assert "kind: multiclass-domain" in md and "(column `topic`)" in md
