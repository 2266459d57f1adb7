"""Held-out metrics: ROC AUC (rank statistic, ties averaged), precision, recall, accuracy."""

from __future__ import annotations

import numpy as np


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    y = np.asarray(y_true, dtype=bool)
    pred = np.asarray(score) > threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    tn = int((~pred & ~y).sum())
    n = len(y)
    return {
        "auc": roc_auc(y, score),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "accuracy": (tp + tn) / n if n else None,
        "threshold": threshold,
        "n_test": n,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def multiclass_metrics(y_true: list[str], probs: np.ndarray, labels: list[str]) -> dict:
    """probs: (n, n_labels) in `labels` order. Macro averages over labels present in the test set."""
    y = np.array(y_true, dtype=object)
    pred = np.array(labels, dtype=object)[np.argmax(probs, axis=1)] if len(y) else np.array([], dtype=object)
    per_label, precisions, recalls, aucs = {}, [], [], []
    for j, label in enumerate(labels):
        is_label = y == label
        if not is_label.any():
            continue
        tp = int(((pred == label) & is_label).sum())
        predicted = int((pred == label).sum())
        p = tp / predicted if predicted else 0.0
        r = tp / int(is_label.sum())
        a = roc_auc(is_label, probs[:, j])
        per_label[label] = {"precision": p, "recall": r, "auc": a, "n_test": int(is_label.sum())}
        precisions.append(p)
        recalls.append(r)
        if a is not None:
            aucs.append(a)
    return {
        "auc": float(np.mean(aucs)) if aucs else None,
        "precision": float(np.mean(precisions)) if precisions else 0.0,
        "recall": float(np.mean(recalls)) if recalls else 0.0,
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "n_test": int(len(y)),
        "averaging": "macro over labels, one-vs-rest AUC",
        "per_label": per_label,
    }
