"""Classification metrics on integer labels (never argmax over a one-column label array)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

HEADS = ("image", "text", "joint")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def auc_ovr(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes present (and absent from no side).

    A class with no positive or no negative sample has no ROC curve; it is left out rather
    than counted as 0.5. NaN when no class qualifies.
    """
    labels = np.asarray(labels).astype(int)
    scores = []
    for k in range(probs.shape[1]):
        positive = labels == k
        if 0 < positive.sum() < len(labels):
            scores.append(roc_auc_score(positive, probs[:, k]))
    return float(np.mean(scores)) if scores else float("nan")


def classification_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels).astype(int)
    probs = softmax(np.asarray(logits, dtype=np.float64))
    predicted = probs.argmax(axis=1)
    classes = list(range(probs.shape[1]))
    return {
        "auc": auc_ovr(labels, probs),
        "f1": float(f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
    }


def head_metrics(predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """``{head}_{metric}`` for every head, from :func:`forgetmi.evaluation.predict.predict`."""
    out = {}
    for head in HEADS:
        for name, value in classification_metrics(predictions["label"],
                                                  predictions[f"{head}_logits"]).items():
            out[f"{head}_{name}"] = value
    return out
