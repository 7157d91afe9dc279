"""Percentile bootstrap confidence intervals for any metric function, by rows or by patient.

Rows of one patient are correlated (≈12 studies per forget patient), so resampling rows
understates the uncertainty of a per-patient forget set; pass ``groups`` (the patient ids) to
resample whole patients instead.

A resample is represented by its multiplicity weights (how often each row was drawn). A metric
function that exposes ``fn.batched(labels, logits, weights) -> {name: (B,) array}`` (as
:func:`forgetmi.evaluation.metrics.full_metrics` does) scores all resamples in a few array
operations; any other ``fn(labels, logits) -> {name: float}`` is called once per resample.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from forgetmi.evaluation.metrics import as_class_labels

log = logging.getLogger("forgetmi.evaluation")

MAX_WEIGHT_CELLS = 2_000_000  # resamples × rows scored per batched call, to bound memory


class Interval(tuple):
    """``(point, low, high)``; ``n_used`` is how many resamples gave a defined (non-NaN) value."""

    def __new__(cls, point: float, low: float, high: float, n_used: int):
        interval = super().__new__(cls, (float(point), float(low), float(high)))
        interval.n_used = int(n_used)
        return interval

    def __getnewargs__(self):
        return (*self, self.n_used)

    point = property(lambda self: self[0])
    low = property(lambda self: self[1])
    high = property(lambda self: self[2])


def resample_weights(n_rows: int, n_boot: int, rng: np.random.Generator,
                     groups: np.ndarray | None = None) -> np.ndarray:
    """``(n_boot, n_rows)`` draw counts: rows drawn with replacement, or whole groups.

    With groups, G groups are drawn with replacement from the G distinct ones and every row of
    a drawn group gets that group's count, so a patient is always in or out as a whole.
    """
    if groups is None:
        return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(float)
    groups = np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"groups must have one entry per row ({n_rows}), got shape "
                         f"{groups.shape}")
    _, member_of = np.unique(groups, return_inverse=True)
    n_groups = member_of.max() + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, member_of].astype(float)


def _resampled_values(fn: Callable, labels: np.ndarray, logits: np.ndarray,
                      weights: np.ndarray) -> dict[str, np.ndarray]:
    batched = getattr(fn, "batched", None)
    if batched is not None:
        chunk = max(1, MAX_WEIGHT_CELLS // len(labels))
        parts = [batched(labels, logits, weights[i:i + chunk])
                 for i in range(0, len(weights), chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rows = np.arange(len(labels))
    values: dict[str, list[float]] = {}
    for w in weights:
        drawn = np.repeat(rows, w.astype(np.int64))
        for k, v in fn(labels[drawn], logits[drawn]).items():
            values.setdefault(k, []).append(float(v))
    return {k: np.asarray(v) for k, v in values.items()}


def bootstrap_ci(fn: Callable, labels: np.ndarray, logits: np.ndarray, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0,
                 groups: np.ndarray | None = None) -> dict[str, Interval]:
    """``{metric: (point, low, high)}``: percentile ``1−alpha`` intervals of ``fn``'s metrics.

    ``point`` is ``fn`` on the data as given. Resamples on which a metric is NaN (e.g. a class
    drawn zero times) are skipped for that metric; ``Interval.n_used`` says how many were used
    (logged when fewer than ``n_boot``); with none the bounds are NaN.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    labels = as_class_labels(labels)
    logits = np.asarray(logits, dtype=np.float64)
    if len(logits) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(logits)} rows of logits")
    point = fn(labels, logits)
    weights = resample_weights(len(labels), n_boot, np.random.default_rng(seed), groups)
    resampled = _resampled_values(fn, labels, logits, weights)
    out = {}
    for name, value in point.items():
        finite = resampled[name][np.isfinite(resampled[name])]
        if len(finite) < n_boot:
            # Each interval keeps its count (Interval.n); a line per figure would bury the log
            # (a small request has dozens of figures with a class absent from some resamples).
            log.debug("bootstrap %s: %d of %d resamples defined", name, len(finite), n_boot)
        low, high = (np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if len(finite)
                     else (np.nan, np.nan))
        out[name] = Interval(value, low, high, len(finite))
    return out
