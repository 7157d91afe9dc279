"""Judged metrics and bootstrap intervals, checked against independent sklearn computations."""

from __future__ import annotations

import time
from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from forgetmi.evaluation.bootstrap import bootstrap_ci, resample_weights
from forgetmi.evaluation.metrics import (all_head_metrics, classification_metrics, full_metrics,
                                         gap, head_metrics, softmax, weighted_full_metrics)


def fake_scores(n: int, seed: int = 0, signal: float = 1.0, decimals: int | None = 1):
    """Labels with the real class balance and logits that favour the true class; rounding the
    logits creates tied scores, which the AUCs must count one half."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, size=n, p=[0.43, 0.22, 0.25, 0.10])
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += signal
    return labels, (np.round(logits, decimals) if decimals is not None else logits)


def test_full_metrics_match_sklearn():
    labels, logits = fake_scores(400)
    probs = softmax(logits)
    m = full_metrics(labels, logits)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-12)
    assert m["auc_pairwise"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovo"),
                                              abs=1e-12)
    for name, k in (("auc_0v123", 1), ("auc_01v23", 2), ("auc_012v3", 3)):
        expected = roc_auc_score(labels >= k, probs[:, k:].sum(axis=1))
        assert m[name] == pytest.approx(expected, abs=1e-12)
    for i, j in combinations(range(4), 2):
        rows = (labels == i) | (labels == j)
        expected = (roc_auc_score(labels[rows] == i, probs[rows, i])
                    + roc_auc_score(labels[rows] == j, probs[rows, j])) / 2
        assert m[f"auc_pair_{i}v{j}"] == pytest.approx(expected, abs=1e-12)
    predicted = probs.argmax(axis=1)
    assert m["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    expected_mse = np.mean([(sum(k * p[k] for k in range(4)) - y) ** 2
                            for p, y in zip(probs, labels)])
    assert m["severity_mse"] == pytest.approx(expected_mse, abs=1e-12)
    # the training-time set agrees with the judged one
    light = classification_metrics(labels, logits)
    assert {k: m[k] for k in light} == pytest.approx(light, abs=1e-12)


def test_undefined_metrics_are_nan_not_errors():
    labels = np.array([0, 1, 0, 1, 1, 0])
    logits = np.array([[2, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0],
                       [0, 2, 1, 0], [1, 0, 0, 0], [0, 0, 3, 0]], dtype=float)
    m = full_metrics(labels, logits)
    probs = softmax(logits)
    # classes 2 and 3 absent: ovr over the two defined classes, pairwise only 0v1
    expected_ovr = np.mean([roc_auc_score(labels == k, probs[:, k]) for k in (0, 1)])
    assert m["auc"] == pytest.approx(expected_ovr)
    assert np.isnan(m["auc_01v23"]) and np.isnan(m["auc_012v3"]) and np.isnan(m["auc_pair_2v3"])
    assert m["auc_0v123"] == pytest.approx(roc_auc_score(labels >= 1, 1 - probs[:, 0]))
    assert m["auc_pairwise"] == pytest.approx(m["auc_pair_0v1"])
    # a single class: every AUC undefined, the rest still defined
    single = full_metrics(np.zeros(6, dtype=int), logits)
    assert all(np.isnan(v) for k, v in single.items() if k.startswith("auc"))
    assert single["accuracy"] == pytest.approx(3 / 6)  # rows 0, 2 (tie -> 0), 4


def test_labels_must_be_class_indices():
    _, logits = fake_scores(5)
    with pytest.raises(ValueError, match="integer class labels"):
        full_metrics(np.array([[0.2], [1.7], [0.0], [2.9], [3.0]]), logits)
    with pytest.raises(ValueError, match="integer class labels"):
        classification_metrics(np.array([0.5, 1.0, 2.0, 3.0, 0.0]), logits)
    with pytest.raises(ValueError, match="shape"):
        full_metrics(np.eye(4)[[0, 1, 2, 3, 0]], logits)  # one-hot rows
    with pytest.raises(ValueError, match="0..4-1|out of range"):
        full_metrics(np.array([0, 1, 2, 4, 0]), logits)
    with pytest.raises(ValueError, match="unlabeled"):
        full_metrics(np.array([0, -1, 2, 3, 0]), logits)
    with pytest.raises(ValueError, match="shape"):
        full_metrics(np.array([0, 1, 2]), logits)
    with pytest.raises(ValueError, match="empty"):
        full_metrics(np.array([], dtype=int), np.zeros((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        full_metrics(np.array([0, 1, 2, 3, 0]), np.full((5, 4), np.nan))
    # a column of integral labels (float or int) is just labels
    column = np.array([[0.0], [1.0], [2.0], [3.0], [0.0]])
    assert full_metrics(column, logits) == full_metrics(np.array([0, 1, 2, 3, 0]), logits)


def test_weights_equal_repeated_rows():
    labels, logits = fake_scores(60, seed=3)
    counts = np.random.default_rng(1).integers(0, 4, size=(3, 60)).astype(float)
    batched = weighted_full_metrics(labels, logits, counts)
    for b, w in enumerate(counts):
        rows = np.repeat(np.arange(60), w.astype(int))
        direct = full_metrics(labels[rows], logits[rows])
        for name, value in direct.items():
            assert batched[name][b] == pytest.approx(value, abs=1e-12, nan_ok=True), name


def test_all_head_metrics_and_gap():
    labels, image = fake_scores(100, seed=1)
    _, joint = fake_scores(100, seed=1, signal=3.0)  # same labels, stronger signal
    predictions = {"label": labels, "index": np.arange(100), "image_logits": image,
                   "text_logits": image, "joint_logits": joint}
    heads = all_head_metrics(predictions)
    assert set(heads) == {"image", "text", "joint"}
    assert heads["joint"] == full_metrics(labels, joint)
    assert head_metrics(predictions)["joint_auc"] == pytest.approx(heads["joint"]["auc"])
    diff = gap(heads, {"image": heads["image"], "joint": heads["image"]})
    assert set(diff) == {"image", "joint"}
    assert all(v == 0 for v in diff["image"].values() if not np.isnan(v))
    assert diff["joint"]["auc"] == pytest.approx(heads["joint"]["auc"] - heads["image"]["auc"])
    assert diff["joint"]["auc"] > 0.1


def test_bootstrap_contains_point_and_narrows_with_more_data():
    small_labels, small_logits = fake_scores(200, seed=4, decimals=None)
    large_labels, large_logits = fake_scores(2000, seed=4, decimals=None)
    small = bootstrap_ci(full_metrics, small_labels, small_logits, n_boot=300)
    large = bootstrap_ci(full_metrics, large_labels, large_logits, n_boot=300)
    for name in ("auc", "auc_pairwise", "f1", "accuracy", "severity_mse"):
        point, low, high = small[name]
        assert low <= point <= high, name
        assert large[name].high - large[name].low < 0.6 * (high - low), name
    assert small["auc"].n_used == 300


def test_batched_bootstrap_equals_the_per_resample_loop():
    labels, logits = fake_scores(80, seed=5)

    def unbatched(y, z):  # same metrics, no ``batched`` attribute: the loop path
        return full_metrics(y, z)

    fast = bootstrap_ci(full_metrics, labels, logits, n_boot=50, seed=7)
    slow = bootstrap_ci(unbatched, labels, logits, n_boot=50, seed=7)
    for name in fast:
        assert tuple(fast[name]) == pytest.approx(tuple(slow[name]), abs=1e-12, nan_ok=True)
        assert fast[name].n_used == slow[name].n_used


def test_group_bootstrap_resamples_whole_groups():
    groups = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    weights = resample_weights(len(groups), 200, np.random.default_rng(0), groups)
    first_row = np.searchsorted(groups, np.arange(10))
    per_group = weights[:, first_row]
    # every row of a group carries that group's count, and 10 groups are drawn each time
    assert np.array_equal(weights, per_group[:, groups])
    assert np.all(per_group.sum(axis=1) == 10)
    assert (per_group == 0).any() and (per_group >= 2).any()

    seen = []

    def group_sizes(y, z):
        seen.append(np.bincount(y, minlength=10))
        return {"rows": float(len(y))}

    # labels stand for the group, so each resample's row counts per group can be checked
    sizes = np.bincount(groups)
    bootstrap_ci(group_sizes, groups, np.zeros((len(groups), 10)), n_boot=30, groups=groups)
    for counts in seen[1:]:
        assert np.all(counts % sizes == 0)
    assert len({tuple(c) for c in seen[1:]}) > 20


def test_nan_resamples_are_skipped_and_counted():
    labels, logits = fake_scores(100, seed=6)
    labels[labels == 3] = 2
    labels[0] = 3  # one class-3 row: resamples that miss it leave auc_012v3 undefined
    ci = bootstrap_ci(full_metrics, labels, logits, n_boot=400, seed=2)
    weights = resample_weights(100, 400, np.random.default_rng(2))
    assert ci["auc_012v3"].n_used == int((weights[:, 0] > 0).sum())
    assert 200 < ci["auc_012v3"].n_used < 400
    assert np.isfinite(ci["auc_012v3"].low) and ci["auc"].n_used == 400


def test_bootstrap_is_fast():
    labels, logits = fake_scores(700, seed=8, decimals=None)
    start = time.perf_counter()
    ci = bootstrap_ci(full_metrics, labels, logits, n_boot=1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"1000 resamples of 700 rows took {elapsed:.2f} s"
    assert ci["auc"].n_used == 1000


def test_bootstrap_rejects_bad_arguments():
    labels, logits = fake_scores(20)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(full_metrics, labels, logits, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(full_metrics, labels, logits, alpha=1.5)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(full_metrics, labels, logits, groups=np.arange(5))
    with pytest.raises(ValueError, match="rows of logits"):
        bootstrap_ci(full_metrics, labels, logits[:10])


def test_macro_f1_averages_only_present_classes_like_sklearn():
    # class 3 absent from labels and predictions; class 2 only predicted (a false positive)
    labels = np.array([0, 0, 1, 1, 1, 0, 2, 2])
    logits = np.full((8, 4), 0.0)
    logits[np.arange(8), [0, 1, 1, 1, 2, 0, 2, 0]] = 2.0
    predicted = softmax(logits).argmax(axis=1)
    expected = f1_score(labels, predicted, average="macro")  # labels=None: present classes
    assert full_metrics(labels, logits)["f1"] == pytest.approx(expected, abs=1e-12)
    assert classification_metrics(labels, logits)["f1"] == pytest.approx(expected, abs=1e-12)
    only_two = labels < 2  # classes 2 and 3 absent from both sides on these rows
    assert full_metrics(labels[only_two], logits[only_two])["f1"] == pytest.approx(
        f1_score(labels[only_two], predicted[only_two], average="macro"), abs=1e-12)
    # the batched (bootstrap) path: a resample that misses class 2 entirely drops it too
    weights = np.array([[1, 2, 1, 3, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=float)
    batched = weighted_full_metrics(labels, logits, weights)["f1"]
    for b, row in enumerate(weights.astype(int)):
        rows = np.repeat(np.arange(8), row)
        assert batched[b] == pytest.approx(
            f1_score(labels[rows], predicted[rows], average="macro"), abs=1e-12)


def test_weighted_auc_with_and_without_ties_is_the_pairwise_count():
    """Tied scores are grouped (half a win per tied pair); distinct scores take the same sums
    without the grouping: both equal the AUC counted pair by pair, resample by resample."""
    from forgetmi.evaluation.metrics import weighted_auc

    rng = np.random.default_rng(5)
    for scores in (rng.random(40), rng.integers(0, 4, 40).astype(float)):
        positive = rng.random(40) < 0.4
        weights = rng.multinomial(40, np.full(40, 1 / 40), size=6).astype(float)
        got = weighted_auc(scores, positive, weights)
        for b, w in enumerate(weights):
            wins = total = 0.0
            for i in np.flatnonzero(positive):
                for j in np.flatnonzero(~positive):
                    pair = w[i] * w[j]
                    total += pair
                    wins += pair * (1.0 if scores[i] > scores[j] else
                                    0.5 if scores[i] == scores[j] else 0.0)
            assert got[b] == pytest.approx(wins / total, abs=1e-12)
