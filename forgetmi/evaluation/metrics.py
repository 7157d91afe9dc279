"""Classification metrics on integer labels (never argmax over a one-column label array).

:func:`classification_metrics` / :func:`head_metrics` are the light set used during training.
:func:`full_metrics` is the set results are judged by (SPEC §6): one-vs-rest, ordinal and
pairwise AUCs, macro F1, accuracy and the severity MSE. It is computed by
:func:`weighted_full_metrics`, which scores a whole stack of resampling weights at once, so the
bootstrap (:mod:`forgetmi.evaluation.bootstrap`) needs no Python loop over resamples.

A metric that the labels leave undefined (a class absent, so a ROC curve has no positive or no
negative side) is NaN, never an exception.
"""

from __future__ import annotations

import logging
from itertools import combinations
from typing import Mapping

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

log = logging.getLogger("forgetmi.evaluation")

HEADS = ("image", "text", "joint")
ORDINAL_SPLITS = {"auc_0v123": 1, "auc_01v23": 2, "auc_012v3": 3}  # name -> first upper class


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, stable for large logits (no log of an underflowed 0)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def as_class_labels(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """``labels`` as a 1-D int array of class indices, or a ValueError saying what was expected.

    A ``(n, 1)`` column is accepted only if it already holds class indices: the paper's release
    took ``argmax`` over such a column (always 0), and a float column of scores or severities
    must not be silently truncated into classes either.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"expected integer class labels of shape (n,), got shape {array.shape}; "
                         "for one-hot or probability rows pass their argmax explicitly")
    if array.size == 0:
        raise ValueError("expected at least one label, got an empty array")
    if array.dtype.kind not in "iub":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)) \
                or not np.all(array == np.round(array)):
            raise ValueError("expected integer class labels 0..K-1, got non-integral values of "
                             f"dtype {array.dtype} (e.g. {array[:3].tolist()}); labels are class "
                             "indices, not scores or one-column argmax inputs")
    array = array.astype(np.int64)
    if array.min() < 0 or (n_classes is not None and array.max() >= n_classes):
        raise ValueError(f"expected class labels in 0..{'K' if n_classes is None else n_classes}-1,"
                         f" got values in {array.min()}..{array.max()} (unlabeled rows cannot be"
                         " scored)")
    return array


def as_logits(logits: np.ndarray, n_rows: int) -> np.ndarray:
    """``logits`` as a finite float64 ``(n_rows, K)`` array with K ≥ 2, or a ValueError."""
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != n_rows or array.shape[1] < 2:
        raise ValueError(f"expected logits of shape ({n_rows}, K) with K >= 2 to match "
                         f"{n_rows} labels, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("logits contain NaN or inf (a diverged model?); metrics would be "
                         "meaningless")
    return array


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
    labels = as_class_labels(labels)
    probs = softmax(np.asarray(logits, dtype=np.float64))
    predicted = probs.argmax(axis=1)
    return {
        "auc": auc_ovr(labels, probs),
        # labels=None: macro over the classes present in labels or predictions (as _macro_f1)
        "f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
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


# --- the judged metric set, vectorised over resampling weights --------------------------------

def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for every row of ``weights`` (B, n); ties count one half.

    A row of integer weights is a resample that repeats sample i ``w_i`` times, so this equals
    the AUC of that resample: sum over positive–negative pairs of ``w_i w_j [s_i > s_j]`` over
    ``W_pos W_neg`` (the Mann–Whitney form). One sort serves all B rows. NaN where a row has no
    positive or no negative weight.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    distinct = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    w = weights[:, order]
    pos = positive[order]
    pos_mass, neg_mass = w * pos, w * ~pos                # (B, n): one row per score
    if not distinct.all():  # summed per group of tied scores; without ties they would copy
        starts = np.flatnonzero(distinct)
        pos_mass = np.add.reduceat(pos_mass, starts, axis=1)
        neg_mass = np.add.reduceat(neg_mass, starts, axis=1)
    neg_below = np.cumsum(neg_mass, axis=1) - neg_mass
    wins = (pos_mass * (neg_below + 0.5 * neg_mass)).sum(axis=1)
    total = pos_mass.sum(axis=1) * neg_mass.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


def _nanmean_rows(columns: list[np.ndarray], n_rows: int) -> np.ndarray:
    """Mean over the defined (non-NaN) entries per row; NaN where none is defined."""
    if not columns:
        return np.full(n_rows, np.nan)
    stack = np.stack(columns, axis=1)
    count = np.isfinite(stack).sum(axis=1)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _ovr_aucs(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _nanmean_rows([weighted_auc(probs[:, k], labels == k, weights)
                          for k in range(probs.shape[1])], len(weights))


def _pairwise_aucs(labels: np.ndarray, probs: np.ndarray,
                   weights: np.ndarray) -> dict[str, np.ndarray]:
    """Hand & Till (2001) per pair: (A(i|j) + A(j|i)) / 2 on the samples of classes i and j."""
    out = {}
    for i, j in combinations(range(probs.shape[1]), 2):
        pair = weights * ((labels == i) | (labels == j))
        a_ij = weighted_auc(probs[:, i], labels == i, pair)
        a_ji = weighted_auc(probs[:, j], labels == j, pair)
        out[f"auc_pair_{i}v{j}"] = (a_ij + a_ji) / 2
    return out


def _macro_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int,
              weights: np.ndarray) -> np.ndarray:
    """Macro F1, F1_k = 2TP / (2TP + FP + FN), over the classes present per weight row.

    A class absent from both the (weighted) labels and predictions has 2TP + FP + FN = 0 and is
    left out rather than scored 0, which would drag resamples missing a rare class down. This is
    ``f1_score(average="macro")`` with ``labels=None``, as :func:`classification_metrics` uses,
    so training-time and judged F1 agree. NaN for a row of zero weight.
    """
    cell = np.zeros((len(labels), n_classes * n_classes))
    cell[np.arange(len(labels)), labels * n_classes + predicted] = 1.0
    confusion = (weights @ cell).reshape(len(weights), n_classes, n_classes)  # [b, true, pred]
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    denominator = confusion.sum(axis=2) + confusion.sum(axis=1)  # 2TP + FN + FP
    present = denominator > 0
    f1 = np.where(present, 2 * tp / np.where(present, denominator, 1.0), 0.0)
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, f1.sum(axis=1) / np.maximum(count, 1), np.nan)


def weighted_full_metrics(labels: np.ndarray, logits: np.ndarray,
                          weights: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`full_metrics` for each row of ``weights`` (B, n): a ``(B,)`` array per metric."""
    labels = as_class_labels(labels)
    logits = as_logits(logits, len(labels))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if weights.shape[1] != len(labels):
        raise ValueError(f"weights have {weights.shape[1]} columns for {len(labels)} rows")
    n_classes = logits.shape[1]
    if labels.max() >= n_classes:
        raise ValueError(f"label {labels.max()} is out of range for {n_classes} logit columns")
    probs = softmax(logits)
    predicted = probs.argmax(axis=1)
    mass = weights.sum(axis=1)
    out = {"auc": _ovr_aucs(labels, probs, weights)}
    for name, k in ORDINAL_SPLITS.items():
        # P(class >= k) summed directly: a running sum rounds differently, and near-ties
        # between rows then order (and score) differently from the definition's sum
        out[name] = (weighted_auc(probs[:, k:].sum(axis=1), labels >= k, weights)
                     if k < n_classes else np.full(len(weights), np.nan))
    pairs = _pairwise_aucs(labels, probs, weights)
    out["auc_pairwise"] = _nanmean_rows(list(pairs.values()), len(weights))
    out.update(pairs)
    out["f1"] = _macro_f1(labels, predicted, n_classes, weights)
    out["accuracy"] = weights @ (predicted == labels) / mass
    expected_severity = probs @ np.arange(n_classes)
    out["severity_mse"] = weights @ (expected_severity - labels) ** 2 / mass
    return out


def full_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """The judged metric set for one head (SPEC §6).

    - ``auc``: mean one-vs-rest AUC of the softmax probabilities over the classes that have
      both positives and negatives (as :func:`auc_ovr`).
    - ``auc_0v123``, ``auc_01v23``, ``auc_012v3``: ordinal AUCs, score = summed probability
      of the upper classes.
    - ``auc_pairwise``: Hand & Till's M (sklearn's ``multi_class="ovo"``), the mean over class
      pairs i<j of (A(i|j)+A(j|i))/2; pairs with an absent class are left out. Per pair:
      ``auc_pair_{i}v{j}``.
    - ``f1`` (macro over the classes present in labels or predictions), ``accuracy``.
    - ``severity_mse``: mean of (sum_k k·p_k − label)².

    AUCs that the labels leave undefined are NaN.
    """
    labels = as_class_labels(labels)
    values = weighted_full_metrics(labels, logits, np.ones((1, len(labels))))
    return {name: float(value[0]) for name, value in values.items()}


full_metrics.batched = weighted_full_metrics  # lets the bootstrap score all resamples at once


def all_head_metrics(predictions: Mapping[str, np.ndarray],
                     heads: tuple[str, ...] = HEADS) -> dict[str, dict[str, float]]:
    """``{head: full_metrics(...)}`` for every head whose ``{head}_logits`` is present."""
    present = [h for h in heads if f"{h}_logits" in predictions]
    if not present:
        raise ValueError(f"no '<head>_logits' among {sorted(predictions)}; expected one of "
                         f"{', '.join(heads)}")
    return {h: full_metrics(predictions["label"], predictions[f"{h}_logits"]) for h in present}


def gap(metrics: Mapping, reference: Mapping) -> dict:
    """``metrics − reference`` key by key (nested dicts recurse), e.g. unlearned − retrained.

    The target of unlearning is to look like the retrained model, so a gap near 0 is good in
    either direction. Keys present on one side only are left out (and logged).
    """
    missing = set(metrics) ^ set(reference)
    if missing:
        log.warning("gap: keys on one side only are left out: %s", sorted(map(str, missing)))
    out = {}
    for key in metrics:
        if key not in reference:
            continue
        a, b = metrics[key], reference[key]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out[key] = gap(a, b)
        else:
            out[key] = float(a) - float(b)
    return out
