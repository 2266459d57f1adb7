"""Training fastText classifiers from labelled document sets, DCLM-style, into a model version.

Inputs are streamed (never held whole) from shards of any supported format into a local
fastText training file and a held-out file:
- positive and negative document sets (URIs, globs or prefixes), e.g. high-quality references
  against random web documents -> a binary model with labels `positive` / `negative`;
- or shards with a label column (any field of the input rows) -> binary for two labels, else
  a multi-class model (domains).

Every document is prepared with `mixforge.classify.preprocess` (settings recorded in the card).
The held-out split is a seeded hash of the document id, so it does not depend on input order or
batching; with `fasttext.thread=1` a training is reproducible bit for bit.

The recipe (issue #16; `benchmarks/bench_classifier_recipe.py` measures it against bare fastText):
1. the training lines are shuffled (seeded by `fasttext.seed`) before fastText reads them: fastText
   reads its file in order, and the inputs arrive one label after the other, so unshuffled it ends
   every epoch on the last label's documents;
2. a model trained on the training split is scored on the held-out split: the card's metrics;
3. the shipped model is then trained with the same recipe on ALL the labelled documents (training
   and held-out), so no labelled document is wasted on the published model;
4. fastText sometimes diverges ("Encountered NaN"), more often at a high learning rate: a diverged
   training is retried with half the learning rate, at most `MAX_LR_HALVINGS` times; the card records
   every diverged attempt and `fasttext.lr` is the rate the shipped model was trained with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mixforge import schema as S
from mixforge.classify import store
from mixforge.classify.card import classifier_card_markdown
from mixforge.classify.config import TrainClassifierConfig
from mixforge.classify.fasttext_model import LABEL_PREFIX, MODEL_FILE, FastTextClassifier, load_fasttext
from mixforge.classify.metrics import binary_metrics, multiclass_metrics
from mixforge.classify.preprocess import preprocess
from mixforge.names import validate_name
from mixforge.shards import ReadConfig, read_raw
from mixforge.storage import discover_shards

log = logging.getLogger("mixforge")

POSITIVE, NEGATIVE = "positive", "negative"
MAX_LR_HALVINGS = 3  # a diverged training is retried at lr/2, lr/4, lr/8, then the error is raised
_POSITIVE_NAMES = ("positive", "pos", "hq", "high", "good", "1", "true")


class TrainingDataError(ValueError):
    pass


class TrainingDiverged(RuntimeError):
    """fastText stopped with "Encountered NaN"."""


@dataclass
class _InputRecord:
    pattern: str
    label: str | None  # fixed label, or None when read from the label column
    shards: list[dict] = field(default_factory=list)


@dataclass
class _Split:
    train_path: str
    test_path: str
    counts: dict[str, Counter] = field(default_factory=lambda: {"train": Counter(), "test": Counter()})
    skipped: Counter = field(default_factory=Counter)


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _clean_label(value: Any) -> str | None:
    if value is None:
        return None
    label = str(value).strip()
    if isinstance(value, bool):
        label = label.lower()
    return "_".join(label.split()) or None


def _is_test(doc_id: str, seed: int, fraction: float) -> bool:
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def _labels_from_column(docs: pa.Table, column: str) -> list[str | None]:
    if column in (S.SOURCE, S.URL, S.ID):
        return [_clean_label(v) for v in docs.column(column).to_pylist()]
    out = []
    for meta in docs.column(S.META).to_pylist():
        out.append(_clean_label(orjson.loads(meta).get(column)) if meta else None)
    return out


def _write_examples(
    split: _Split,
    record: _InputRecord,
    label_column: str | None,
    cfg: TrainClassifierConfig,
    storage_options,
    train_f,
    test_f,
) -> None:
    cap = cfg.max_docs_per_label
    opts = ReadConfig(text_field=cfg.text_field)
    for shard in discover_shards(record.pattern, storage_options):
        digest = hashlib.sha256()
        used = 0
        for raw in read_raw(shard.uri, opts, storage_options):
            docs = raw.docs
            if docs.num_rows == 0:
                continue
            texts = docs.column(S.TEXT)
            prepared = preprocess(texts, cfg.preprocess)
            labels = (
                [record.label] * docs.num_rows if record.label is not None else _labels_from_column(docs, label_column)
            )
            lengths = pc.utf8_length(prepared).to_numpy(zero_copy_only=False)
            for doc_id, text, raw_text, label, n_chars in zip(
                docs.column(S.ID).to_pylist(), prepared.to_pylist(), texts.to_pylist(), labels, lengths
            ):
                if label is None:
                    split.skipped["no_label"] += 1
                    continue
                if n_chars < cfg.min_chars:
                    split.skipped["too_short"] += 1
                    continue
                if cap is not None and split.counts["train"][label] + split.counts["test"][label] >= cap:
                    split.skipped["over_cap"] += 1
                    continue
                which = "test" if _is_test(doc_id, cfg.split_seed, cfg.test_fraction) else "train"
                (test_f if which == "test" else train_f).write(f"{LABEL_PREFIX}{label} {text}\n")
                split.counts[which][label] += 1
                digest.update(raw_text.encode("utf-8", "surrogatepass") + b"\0")
                used += 1
            if (
                record.label is not None
                and cap is not None
                and split.counts["train"][record.label] + split.counts["test"][record.label] >= cap
            ):
                break  # this set's label is full: stop reading its shards
        record.shards.append(
            {"uri": shard.uri, "bytes": shard.size, "docs_used": used, "text_sha256": digest.hexdigest()}
        )
        if (
            record.label is not None
            and cap is not None
            and split.counts["train"][record.label] + split.counts["test"][record.label] >= cap
        ):
            break


def _train_fasttext(train_path: str, params: dict, model_path: str, workdir: str) -> None:
    """fastText training in a child process (see mixforge.classify._fasttext_worker for why)."""
    args_path = os.path.join(workdir, "fasttext-args.json")
    with open(args_path, "w") as f:
        json.dump({"input": train_path, "params": params, "output": model_path}, f)
    proc = subprocess.run(
        [sys.executable, "-m", "mixforge.classify._fasttext_worker", args_path],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    if proc.returncode != 0 or not os.path.isfile(model_path):
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit status {proc.returncode}"
        detail = detail.removeprefix("fastText training failed: ")  # the worker's own prefix
        if "NaN" in detail:
            raise TrainingDiverged(f"fastText training failed: {detail}")
        raise RuntimeError(f"fastText training failed: {detail}")


def _train_converging(
    train_path: str, params: dict, model_path: str, workdir: str, model: str, diverged: list[dict]
) -> dict:
    """Train, halving the learning rate after each divergence (at most MAX_LR_HALVINGS times).

    Returns the parameters that trained; appends each diverged attempt to `diverged`."""
    for halvings in range(MAX_LR_HALVINGS + 1):
        try:
            _train_fasttext(train_path, params, model_path, workdir)
            return params
        except TrainingDiverged as e:
            diverged.append({"model": model, "lr": params["lr"], "error": str(e)})
            if halvings == MAX_LR_HALVINGS:
                raise TrainingDiverged(
                    f"{e} (the training diverged at every learning rate from {params['lr'] * 2**halvings:g} "
                    f"down to {params['lr']:g}: lower fasttext.lr further or check the data)"
                ) from None
            log.warning(
                "fastText diverged at lr=%g (%s model); retrying at lr=%g", params["lr"], model, params["lr"] / 2
            )
            params = {**params, "lr": params["lr"] / 2}
    raise AssertionError("unreachable")


def _shuffle_lines(sources: Sequence[str], target: str, seed: int) -> int:
    """Write the lines of `sources` to `target` in a seeded random order; returns the number of lines.

    Only the line offsets are held in memory (8 bytes a line), not the text."""
    offsets, files = array("q"), []
    for i, path in enumerate(sources):
        position = 0
        with open(path, "rb") as f:
            for line in f:
                offsets.extend((i, position, len(line)))
                position += len(line)
    n = len(offsets) // 3
    with open(target, "wb") as out:
        try:
            files = [open(path, "rb") for path in sources]
            for j in np.random.default_rng(seed).permutation(n):
                source, position, length = offsets[3 * j : 3 * j + 3]
                files[source].seek(position)
                out.write(files[source].read(length))
        finally:
            for f in files:
                f.close()
    return n


def _pythonpath() -> str:
    """The child must import this very mixforge (also when it runs from a source tree, not installed)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)


def _read_examples(path: str) -> tuple[list[str], list[str]]:
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            label, _, text = line.rstrip("\n").partition(" ")
            labels.append(label.removeprefix(LABEL_PREFIX))
            texts.append(text)
    return labels, texts


def _choose_positive(labels: list[str], configured: str | None) -> str:
    if configured is not None:
        if configured not in labels:
            raise TrainingDataError(f"positive_label {configured!r} is not one of the labels found {labels}")
        return configured
    found = [label for label in labels if label.lower() in _POSITIVE_NAMES]
    if len(found) != 1:
        raise TrainingDataError(f"cannot tell which of the labels {labels} is the positive one: set positive_label")
    return found[0]


def train_classifier(
    name: str,
    root: str,
    *,
    positive: str | Sequence[str] | None = None,
    negative: str | Sequence[str] | None = None,
    input: str | Sequence[str] | None = None,
    label_column: str | None = None,
    config: TrainClassifierConfig = TrainClassifierConfig(),
) -> store.ModelVersion:
    """Train a fastText classifier and publish it as the next version of `<root>/models/<name>/`."""
    validate_name(name, "model name")
    so: Mapping[str, Any] = config.storage_options
    if positive or negative:
        if input or label_column:
            raise TrainingDataError("give either positive and negative sets, or input with a label column, not both")
        if not (_as_list(positive) and _as_list(negative)):
            raise TrainingDataError("both positive and negative document sets are needed")
        records = [_InputRecord(p, POSITIVE) for p in _as_list(positive)] + [
            _InputRecord(p, NEGATIVE) for p in _as_list(negative)
        ]
    elif input:
        if not label_column:
            raise TrainingDataError("input shards need a label column (--label-column)")
        records = [_InputRecord(p, None) for p in _as_list(input)]
    else:
        raise TrainingDataError("no training data: give positive and negative sets, or input with a label column")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixforge-train-") as tmp:
        split = _Split(os.path.join(tmp, "train.txt"), os.path.join(tmp, "test.txt"))
        with (
            open(split.train_path, "w", encoding="utf-8") as train_f,
            open(split.test_path, "w", encoding="utf-8") as test_f,
        ):
            for record in records:
                _write_examples(split, record, label_column, config, so, train_f, test_f)
        prepared_seconds = time.perf_counter() - started
        labels = sorted(set(split.counts["train"]) | set(split.counts["test"]))
        if len(labels) < 2:
            raise TrainingDataError(
                f"need documents of at least two labels, found {labels or 'none'} "
                f"(skipped: {dict(split.skipped) or 'none'})"
            )
        for label in labels:
            if split.counts["train"][label] == 0:
                raise TrainingDataError(
                    f"label {label!r} has no training documents (all "
                    f"{split.counts['test'][label]} fell in the held-out split)"
                )
        kind = config.kind or ("binary-quality" if len(labels) == 2 else "multiclass-domain")
        if kind == "binary-quality" and len(labels) != 2:
            raise TrainingDataError(f"a binary-quality model needs exactly two labels, found {labels}")
        positive_label = (
            (POSITIVE if records[0].label is not None else _choose_positive(labels, config.positive_label))
            if kind == "binary-quality"
            else None
        )

        params = config.fasttext.model_dump()
        diverged: list[dict] = []
        t0 = time.perf_counter()
        shuffled = os.path.join(tmp, "train-shuffled.txt")
        _shuffle_lines([split.train_path], shuffled, params["seed"])
        eval_path = os.path.join(tmp, "evaluated.bin")
        params = _train_converging(shuffled, params, eval_path, tmp, "evaluated", diverged)
        train_seconds = time.perf_counter() - t0
        model = load_fasttext(eval_path)

        test_labels, test_texts = _read_examples(split.test_path)
        scorer = FastTextClassifier(
            store.ModelVersion(name, "", "", {"labels": labels, "preprocess": config.preprocess.model_dump()})
        )
        scorer.model = model
        probs = scorer.probabilities(test_texts)
        if kind == "binary-quality":
            metrics = binary_metrics(
                np.array(test_labels) == positive_label, probs[:, labels.index(positive_label)], config.threshold
            )
        else:
            metrics = multiclass_metrics(test_labels, probs, labels)
        if not test_labels:
            log.warning("model %s: the held-out split is empty; metrics are undefined", name)

        # The shipped model: the same recipe on every labelled document, held-out ones included.
        t0 = time.perf_counter()
        model_path = os.path.join(tmp, MODEL_FILE)
        if test_labels:
            n_all = _shuffle_lines([split.train_path, split.test_path], shuffled, params["seed"])
            params = _train_converging(shuffled, params, model_path, tmp, "shipped", diverged)
        else:  # nothing was held out: the evaluated model already saw every document
            n_all = len(_read_examples(split.train_path)[0])
            os.replace(eval_path, model_path)
        final_seconds = time.perf_counter() - t0

        card = {
            "kind": kind,
            "labels": labels,
            "positive_label": positive_label,
            "metrics": metrics,
            "preprocess": config.preprocess.model_dump(),
            "fasttext": params,
            "training": {
                "test_fraction": config.test_fraction,
                "split_seed": config.split_seed,
                "threshold": config.threshold,
                "max_docs_per_label": config.max_docs_per_label,
                "min_chars": config.min_chars,
                "text_field": config.text_field,
                "seconds_prepare": round(prepared_seconds, 3),
                "seconds_train": round(train_seconds, 3),
                "shipped_model": "trained on all labelled documents (training and held-out splits) after the "
                "held-out evaluation; the metrics are those of the same recipe trained on the training split",
                "docs_shipped_model": n_all,
                "seconds_train_shipped": round(final_seconds, 3),
                "shuffle_seed": params["seed"],
                "diverged": diverged,
            },
            "data": {
                "label_column": label_column,
                "inputs": [
                    {
                        "pattern": r.pattern,
                        "label": r.label,
                        "shards": r.shards,
                        "docs_used": sum(s["docs_used"] for s in r.shards),
                    }
                    for r in records
                ],
                "docs_per_label": {
                    label: {"train": split.counts["train"][label], "test": split.counts["test"][label]}
                    for label in labels
                },
                "docs_skipped": dict(split.skipped),
                "train_file_sha256": store.sha256_file(split.train_path),
                "test_file_sha256": store.sha256_file(split.test_path),
            },
        }
        version = store.publish(root, name, {MODEL_FILE: model_path}, card, so, markdown=classifier_card_markdown)
    from mixforge import contracts

    contracts.validate(version.card, contracts.ClassifierCard)  # a classifier card's contract (docs/schemas)
    log.info(
        "trained %s %s (%s): %s",
        name,
        version.version,
        kind,
        ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float)),
    )
    return version
