"""Membership-inference attacks on synthetic signals with known answers, and hand-computed ROCs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.stats import norm

from forgetmi.evaluation.metrics import softmax
from forgetmi.evaluation.mia import (_splitter, attack_features, batch_means, lira_scores,
                                     lira_statistic, logit_similarity, population_attack,
                                     sample_losses, svc_mia_paper, svc_mia_per_batch,
                                     svc_mia_report, tpr_at_fpr, vulnerability_summary)


def predictions(n: int = 12, seed: int = 0, embeddings: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"label": rng.integers(0, 4, n), "index": np.arange(n)}
    for head in ("image", "text", "joint"):
        out[f"{head}_logits"] = rng.normal(size=(n, 4)) * 2
    if embeddings:
        out["image_embedding"] = rng.normal(size=(n, 6))
        out["text_embedding"] = rng.normal(size=(n, 6))
    return out


def test_sample_losses_and_attack_features_by_hand():
    p = predictions()
    rows = np.arange(12)
    probs = softmax(p["text_logits"])
    assert sample_losses(p, "text") == pytest.approx(-np.log(probs[rows, p["label"]]))
    features, names = attack_features(p)
    assert features.shape == (12, 16) and len(names) == 16
    column = dict(zip(names, features.T))
    assert column["text_confidence"] == pytest.approx(probs.max(axis=1))
    assert column["text_entropy"] == pytest.approx(-(probs * np.log(probs)).sum(axis=1))
    assert column["text_true_prob"] == pytest.approx(probs[rows, p["label"]])
    true = probs[rows, p["label"]]
    assert column["text_true_logit"] == pytest.approx(np.log(true / (1 - true)))
    a, b = p["image_embedding"], p["text_embedding"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert column["image_text_cosine"] == pytest.approx(cosine)
    _, without = attack_features(predictions(embeddings=False))
    assert "image_text_cosine" not in without and len(without) == 15


def test_lira_statistic_is_stable_where_p_rounds_to_one():
    logits = np.array([[50.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.5]])
    stat = lira_statistic(logits, np.array([0, 1]))
    assert stat[0] == pytest.approx(50 - np.log(3))  # log(p/(1-p)) with 1-p ≈ 3e-22
    p = softmax(logits[1:])[0, 1]
    assert stat[1] == pytest.approx(np.log(p / (1 - p)))


def synthetic_losses(seed: int = 0):
    rng = np.random.default_rng(seed)
    retain = rng.exponential(0.1, 600)           # members: near-zero loss
    test = rng.normal(2.0, 0.3, 200).clip(0)     # non-members: clearly higher
    return rng, retain, test


def test_svc_paper_attack_separates_member_like_from_nonmember_like():
    rng, retain, test = synthetic_losses()
    member_like = rng.exponential(0.1, 201)
    nonmember_like = rng.normal(2.0, 0.3, 201).clip(0)
    assert svc_mia_paper(retain, test, member_like) > 0.95
    assert svc_mia_paper(retain, test, nonmember_like) < 0.05


def test_per_batch_variant_moves_in_steps_of_one_over_batches():
    rng, retain, test = synthetic_losses(1)
    assert batch_means(np.arange(5.0), 2) == pytest.approx([0.5, 2.5, 4.0])
    # 201 forget rows in batches of 32 -> 7 batches, the paper's 3% step of 1/7
    mixed = np.r_[rng.exponential(0.1, 96), rng.normal(2.0, 0.3, 105).clip(0)]
    score = svc_mia_per_batch(retain, test, mixed, batch_size=32)
    assert score * 7 == pytest.approx(round(score * 7), abs=1e-9)
    assert score == pytest.approx(3 / 7)  # the three all-member batches
    report = svc_mia_report(retain, test, mixed)
    assert report["svc_mia_release_per_batch32"] == score
    assert report["svc_mia_release_n_forget_batches"] == 7
    assert report["svc_mia_per_sample"] == pytest.approx(96 / 201, abs=0.03)


def test_tpr_at_fpr_on_a_hand_made_roc():
    # positives .95 .7 .6 .35, negatives .9 .7 .3 .2 .1; ROC vertices (FPR, TPR):
    # (0, .25) (.2, .25) then the .7 tie runs diagonally to (.4, .5), (.4, .75), (.4, 1)
    scores = np.array([0.95, 0.7, 0.6, 0.35, 0.9, 0.7, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(0.25)
    assert tpr_at_fpr(labels, scores, 0.1) == pytest.approx(0.25)
    assert tpr_at_fpr(labels, scores, 0.3) == pytest.approx(0.375)
    assert tpr_at_fpr(labels, scores, 0.4) == pytest.approx(1.0)


def test_population_attack_finds_a_real_signal():
    rng = np.random.default_rng(0)
    members = rng.normal(0, 1, (1000, 3))
    members[:, 0] -= 2.0  # e.g. lower loss
    nonmembers = rng.normal(0, 1, (1500, 3))
    target = np.r_[members[:60], nonmembers[:40]] + rng.normal(0, 0.01, (100, 3))
    out = population_attack(members, nonmembers, target, seed=1)
    assert out["auc"] > 0.9
    assert out["n_per_side"] == 1000 and out["min_fpr_step"] == pytest.approx(1e-3)
    assert 0.1 < out["tpr_at_1pct_fpr"] <= 1.0
    assert out["tpr_at_0.1pct_fpr"] <= out["tpr_at_1pct_fpr"]
    assert 0.45 < out["target_member_fraction"] < 0.75
    assert out["mia_efficacy"] == pytest.approx(1 - out["target_member_fraction"])


def test_population_attack_is_chance_on_identical_distributions():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(0, 1, (1000, 4)), rng.normal(0, 1, (1300, 4))
    patients = np.arange(2300) // 5
    out = population_attack(members, nonmembers, rng.normal(0, 1, (200, 4)),
                            member_groups=patients[:1000], nonmember_groups=patients[1000:],
                            target_groups=np.arange(200) // 4, seed=2)
    assert abs(out["auc"] - 0.5) < 0.08            # 4 SD of the null AUC at n=1000 per side
    assert abs(out["patient_auc"] - 0.5) < 0.15    # 200 patients per side
    assert 0.2 < out["target_member_fraction"] < 0.8
    assert 0.0 <= out["target_patient_member_fraction"] <= 1.0


def test_group_aware_folds_keep_patients_whole():
    y = np.r_[np.ones(60), np.zeros(60)]
    groups = np.arange(120) // 4
    for train, held_out in _splitter(5, 0, y, groups).split(np.zeros((120, 1)), y, groups):
        assert not set(groups[train]) & set(groups[held_out])


def test_few_nonmembers_flag_the_low_fpr_figure(caplog):
    rng = np.random.default_rng(2)
    with caplog.at_level(logging.WARNING, logger="forgetmi.evaluation"):
        out = population_attack(rng.normal(1, 1, (300, 2)), rng.normal(0, 1, (50, 2)))
    assert out["n_per_side"] == 50 and out["min_fpr_step"] == pytest.approx(0.02)
    assert "tpr_at_0.1pct_fpr" in caplog.text and "interpolated" in caplog.text


def test_attack_inputs_are_checked():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    with pytest.raises(ValueError, match="non-empty"):
        population_attack(a, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="columns"):
        population_attack(a, b[:, :1])
    with pytest.raises(ValueError, match="one entry per row"):
        population_attack(a, b, member_groups=np.arange(5), nonmember_groups=np.arange(20))
    with pytest.raises(ValueError, match="both"):
        population_attack(a, b, member_groups=np.arange(20))
    with pytest.raises(ValueError, match="per side"):
        population_attack(a[:3], b)
    with pytest.raises(ValueError, match="empty"):
        svc_mia_paper(np.ones(5), np.array([]), np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        logit_similarity(np.zeros((3, 4)), np.zeros((2, 4)))


def shadow_stats(seed: int = 0, n: int = 40, shadows: int = 16):
    rng = np.random.default_rng(seed)
    mu_in, mu_out = rng.normal(4, 1, n), rng.normal(0, 1, n)
    in_stats = mu_in[:, None] + rng.normal(0, 1, (n, shadows))
    out_stats = mu_out[:, None] + rng.normal(0, 1, (n, shadows))
    target = np.where(np.arange(n) < n // 2, mu_in, mu_out) + rng.normal(0, 0.3, n)
    return target, in_stats, out_stats


def test_lira_ranks_in_like_targets_above_out_like():
    target, in_stats, out_stats = shadow_stats()
    online = lira_scores(target, in_stats, out_stats)
    assert online["log_ratio"][:20].min() > online["log_ratio"][20:].max()
    m_in, s_in = in_stats[0].mean(), in_stats[0].std(ddof=1)
    m_out, s_out = out_stats[0].mean(), out_stats[0].std(ddof=1)
    expected = norm.logpdf(target[0], m_in, s_in) - norm.logpdf(target[0], m_out, s_out)
    assert online["log_ratio"][0] == pytest.approx(expected)
    assert online["p_value"][0] == pytest.approx(norm.sf(target[0], m_out, s_out))
    offline = lira_scores(target, None, out_stats)
    assert np.isnan(offline["log_ratio"]).all()
    assert offline["score"][:20].mean() > offline["score"][20:].mean() + 5
    assert offline["score"] == pytest.approx(-np.log(offline["p_value"]), rel=1e-6)
    pooled = lira_scores(target, in_stats, out_stats, fix_variance=True)
    assert pooled["log_ratio"][:20].min() > pooled["log_ratio"][20:].max()


def test_lira_needs_two_shadow_statistics_per_example():
    target, in_stats, out_stats = shadow_stats(n=4, shadows=3)
    out_stats[1, 1:] = np.nan  # one statistic left for example 1
    scores = lira_scores(target, in_stats, out_stats)
    assert np.isnan(scores["score"][1]) and np.isfinite(scores["score"][[0, 2, 3]]).all()
    summary = vulnerability_summary(scores["score"], thresholds=(0.0,))
    assert summary["n"] == 4 and summary["n_defined"] == 3
    with pytest.raises(ValueError, match="out_stats"):
        lira_scores(target, in_stats, out_stats[:2])


def test_vulnerability_summary_by_hand():
    summary = vulnerability_summary(np.array([-1.0, 0.5, 1.5, 2.5, 4.0]), thresholds=(0, 2))
    assert summary["q50"] == 1.5 and summary["max"] == 4.0 and summary["mean"] == 1.5
    assert summary["frac_above_0"] == pytest.approx(0.8)
    assert summary["frac_above_2"] == pytest.approx(0.4)


def test_logit_similarity():
    logits = np.random.default_rng(4).normal(size=(10, 4))
    same = logit_similarity(logits, logits)
    assert same["one_minus_cosine"] == pytest.approx(0, abs=1e-12)
    assert same["kl_b_a"] == pytest.approx(0, abs=1e-12)
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    hand = logit_similarity(a, b)
    p_a, p_b = softmax(a)[0], softmax(b)[0]
    assert hand["one_minus_cosine"] == pytest.approx(1.0)
    assert hand["kl_b_a"] == pytest.approx((p_b * np.log(p_b / p_a)).sum())
    # scaled logits point the same way (cosine blind) but predict differently (KL sees it)
    scaled = logit_similarity(3 * logits, logits)
    assert scaled["one_minus_cosine"] == pytest.approx(0, abs=1e-12) and scaled["kl_b_a"] > 0.05


# --- the headline: forget rows vs unseen rows ---------------------------------------------------

def patients(n_rows: int, first: int = 0, rows_each: int = 4) -> np.ndarray:
    return first + np.arange(n_rows) // rows_each


def test_weighted_auc_is_sklearns_auc_of_the_repeated_rows():
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import weighted_auc
    rng = np.random.default_rng(4)
    positive, negative = np.round(rng.normal(0.3, 1, 40), 1), np.round(rng.normal(0, 1, 55), 1)
    counts_p, counts_n = rng.integers(0, 3, 40), rng.integers(0, 3, 55)  # rounding makes ties
    drawn_p, drawn_n = np.repeat(positive, counts_p), np.repeat(negative, counts_n)
    expected = roc_auc_score(np.r_[np.ones(len(drawn_p)), np.zeros(len(drawn_n))],
                             np.r_[drawn_p, drawn_n])
    both = weighted_auc(positive, negative, np.stack([counts_p, np.ones(40)]).astype(float),
                        np.stack([counts_n, np.ones(55)]).astype(float))
    assert both[0] == pytest.approx(expected, abs=1e-12)
    assert both[1] == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(55)],
                                                  np.r_[positive, negative]), abs=1e-12)


def test_forget_vs_unseen_is_chance_when_forget_rows_look_unseen():
    from forgetmi.evaluation.mia import forget_vs_unseen_attack
    rng = np.random.default_rng(21)
    forget, unseen = rng.normal(0, 1, (400, 4)), rng.normal(0, 1, (520, 4))
    out = forget_vs_unseen_attack(forget, unseen, forget_groups=patients(400),
                                  unseen_groups=patients(520, 1000), seed=3, n_boot=100)
    assert out["low"] < 0.5 < out["high"]
    assert abs(out["auc"] - 0.5) < 0.07              # ≈ 3 SD of the null AUC at 400 per side
    assert out["high"] - out["low"] < 0.2
    assert out["n_forget"] == out["n_unseen"] == 400  # balanced: the larger side subsampled
    assert out["n_forget_patients"] == 100 and out["n_boot_used"] == 100


def test_forget_vs_unseen_finds_forget_rows_with_lower_loss():
    from forgetmi.evaluation.mia import forget_vs_unseen_attack
    rng = np.random.default_rng(22)
    forget, unseen = rng.normal(0, 1, (400, 4)), rng.normal(0, 1, (300, 4))
    forget[:, 0] -= 0.8  # column 0 as a loss: the model still fits its forget rows better
    out = forget_vs_unseen_attack(forget, unseen, forget_groups=patients(400),
                                  unseen_groups=patients(300, 1000), seed=3, n_boot=100)
    assert out["auc"] > 0.65 and out["low"] > 0.55   # Φ(0.8/√2) ≈ 0.71 with the true score
    assert out["low"] <= out["auc"] <= out["high"]
    assert out["n_forget"] == out["n_unseen"] == 300


def test_forget_vs_unseen_interval_narrows_with_more_rows():
    from forgetmi.evaluation.mia import forget_vs_unseen_attack
    rng = np.random.default_rng(23)
    widths = {}
    for n in (100, 900):
        forget, unseen = rng.normal(0, 1, (n, 3)), rng.normal(0, 1, (n, 3))
        forget[:, 0] -= 0.5
        out = forget_vs_unseen_attack(forget, unseen, forget_groups=patients(n),
                                      unseen_groups=patients(n, 10_000), seed=5, n_boot=100)
        widths[n] = out["high"] - out["low"]
    # the standard error falls as 1/√n: 9× the rows, about a third of the width
    assert widths[100] > 2.0 * widths[900], widths
    assert 0.01 < widths[900] < 0.12, widths


def test_forget_vs_unseen_interval_resamples_patients_and_is_seeded():
    """Rows of one patient move together: resampling patients gives a wider interval than
    resampling rows as if they were independent; the same seed gives the same interval."""
    from forgetmi.evaluation.mia import forget_vs_unseen_attack
    rng = np.random.default_rng(24)
    def clustered(n_patients):  # 8 rows per patient, mostly the patient's own offset
        return (np.repeat(rng.normal(0, 1, (n_patients, 3)), 8, axis=0)
                + rng.normal(0, 0.3, (8 * n_patients, 3)))
    forget, unseen = clustered(40), clustered(40)
    groups = dict(forget_groups=patients(320, 0, 8), unseen_groups=patients(320, 100, 8))
    by_patient = forget_vs_unseen_attack(forget, unseen, **groups, seed=1, n_boot=100)
    by_row = forget_vs_unseen_attack(forget, unseen, seed=1, n_boot=100)
    assert by_patient["interval"].startswith("patient bootstrap")
    assert by_row["interval"].startswith("row bootstrap")
    width = {k: v["high"] - v["low"] for k, v in (("patient", by_patient), ("row", by_row))}
    assert width["patient"] > 1.5 * width["row"], width
    again = forget_vs_unseen_attack(forget, unseen, **groups, seed=1, n_boot=100)
    assert again == by_patient
    other = forget_vs_unseen_attack(forget, unseen, **groups, seed=2, n_boot=100)
    assert (other["low"], other["high"]) != (by_patient["low"], by_patient["high"])


def test_forget_vs_unseen_inputs_are_checked():
    from forgetmi.evaluation.mia import forget_vs_unseen_attack
    rng = np.random.default_rng(25)
    forget, unseen = rng.normal(0, 1, (40, 2)), rng.normal(0, 1, (40, 2))
    with pytest.raises(ValueError, match="forget and unseen rows"):
        forget_vs_unseen_attack(forget, unseen, forget_groups=patients(40),
                                unseen_groups=patients(40))  # the same patient ids on both sides
    with pytest.raises(ValueError, match="the forget rows have 2"):
        forget_vs_unseen_attack(forget, unseen, forget_groups=np.arange(40) % 2,
                                unseen_groups=patients(40, 100))
    with pytest.raises(ValueError, match="columns"):
        forget_vs_unseen_attack(forget, unseen[:, :1])
    with pytest.raises(ValueError, match="for both"):
        forget_vs_unseen_attack(forget, unseen, forget_groups=patients(40))


def test_batched_logistic_refit_is_the_sklearn_attack_refit():
    from forgetmi.evaluation.bootstrap import resample_weights
    from forgetmi.evaluation.mia import _logistic_refit_aucs, _weighted_oof_auc, fold_ids
    rng = np.random.default_rng(26)
    x = rng.normal(0, 1, (300, 6))
    x[:150, 0] -= 0.4
    x[:, 5] = 3 * x[:, 4] + 0.01 * rng.normal(size=300)  # nearly collinear, as loss/true_prob
    y, groups = np.r_[np.ones(150), np.zeros(150)], patients(300, 0, 3)
    fold = fold_ids(y, groups, 5, 0)
    draws = np.random.default_rng(1)
    counts = np.concatenate([resample_weights(150, 6, draws, groups[:150]),
                             resample_weights(150, 6, draws, groups[150:])], axis=1)
    batched = _logistic_refit_aucs(x, y, fold, counts)
    one_by_one = [_weighted_oof_auc(x, y, fold, c, 0, "logistic") for c in counts]
    assert batched == pytest.approx(one_by_one, abs=2e-3)  # sklearn's lbfgs stops at tol 1e-4
    assert np.ptp(batched) > 0.01                           # the resamples do differ


def test_within_fold_auc_ignores_a_shift_of_one_folds_scores():
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import within_fold_auc
    y = np.r_[np.ones(4), np.zeros(4)]
    fold = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.6, 0.4, 0.9, 0.7, 0.5, 0.3, 0.8, 0.6])
    # fold 0: positives .6 .4 vs negatives .5 .3 -> 3 of 4 pairs; fold 1: .9 .7 vs .8 .6 -> 3 of 4
    assert within_fold_auc(scores, y, fold, np.ones(8)) == pytest.approx(0.75)
    shifted = scores + 0.5 * (fold == 1)
    assert within_fold_auc(shifted, y, fold, np.ones(8)) == pytest.approx(0.75)
    assert roc_auc_score(y, scores) == pytest.approx(10.5 / 16)  # pooled: pairs across folds
    # a row drawn twice counts twice: positive .4 (fold 0) doubled wins 1 of 2 pairs twice
    counts = np.array([1, 2, 1, 1, 1, 1, 1, 1.0])
    assert within_fold_auc(scores, y, fold, counts) == pytest.approx((4 + 3) / (6 + 4))


# ---------------------------------------------------------- the headline: the loss attack


def test_forget_vs_unseen_loss_is_the_rank_auc_of_lower_loss_over_every_unseen_row():
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    rng = np.random.default_rng(31)
    forget, unseen = rng.gamma(2, 0.5, 150), rng.gamma(2, 0.5, 520)
    forget[:40] = np.round(forget[:40], 1)
    unseen[:40] = np.round(unseen[:40], 1)            # ties count one half
    out = forget_vs_unseen_loss(forget, unseen, forget_groups=patients(150),
                                unseen_groups=patients(520, 1000), seed=3, n_boot=400)
    expected = roc_auc_score(np.r_[np.ones(150), np.zeros(520)], -np.r_[forget, unseen])
    assert out["auc"] == pytest.approx(expected, abs=1e-12)
    assert out["n_forget"] == 150 and out["n_unseen"] == 520   # nothing subsampled
    assert out["n_forget_patients"] == 38 and out["n_unseen_patients"] == 130
    assert out["low"] < 0.5 < out["high"] and abs(out["auc"] - 0.5) < 0.08


def test_forget_vs_unseen_loss_separates_remembered_from_never_seen():
    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    rng = np.random.default_rng(32)
    unseen = rng.gamma(2, 0.5, 500)
    remembered = forget_vs_unseen_loss(rng.gamma(2, 0.5, 200) * 0.5, unseen,
                                       forget_groups=patients(200),
                                       unseen_groups=patients(500, 1000), n_boot=300)
    never_seen = forget_vs_unseen_loss(rng.gamma(2, 0.5, 200), unseen,
                                       forget_groups=patients(200),
                                       unseen_groups=patients(500, 1000), n_boot=300)
    over_forgotten = forget_vs_unseen_loss(rng.gamma(2, 0.5, 200) * 2.0, unseen,
                                           forget_groups=patients(200),
                                           unseen_groups=patients(500, 1000), n_boot=300)
    assert remembered["low"] > 0.65 and never_seen["high"] < remembered["low"]
    assert never_seen["low"] < 0.5 < never_seen["high"]
    assert over_forgotten["high"] < 0.4                # fitting them worse shows too
    for out in (remembered, never_seen, over_forgotten):
        assert out["high"] - out["low"] < 0.16


def test_forget_vs_unseen_loss_interval_resamples_patients_and_is_seeded():
    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    rng = np.random.default_rng(33)
    def clustered(n_patients):  # 8 rows per patient, mostly the patient's own level
        return np.exp(np.repeat(rng.normal(0, 1, n_patients), 8) + rng.normal(0, 0.3, 8 * n_patients))
    forget, unseen = clustered(40), clustered(60)
    groups = dict(forget_groups=patients(320, 0, 8), unseen_groups=patients(480, 100, 8))
    by_patient = forget_vs_unseen_loss(forget, unseen, **groups, seed=1, n_boot=300)
    by_row = forget_vs_unseen_loss(forget, unseen, seed=1, n_boot=300)
    assert by_patient["interval"].startswith("patient jackknife, Student t")
    assert by_patient["bootstrap_interval"].startswith("patient bootstrap")
    assert by_row["interval"].startswith("row jackknife")
    assert by_row["auc"] == by_patient["auc"]
    for prefix in ("", "bootstrap_"):
        width = {k: v[f"{prefix}high"] - v[f"{prefix}low"]
                 for k, v in (("patient", by_patient), ("row", by_row))}
        assert width["patient"] > 1.5 * width["row"], (prefix, width)
    assert forget_vs_unseen_loss(forget, unseen, **groups, seed=1, n_boot=300) == by_patient
    # the headline interval is exact, the kept bootstrap one follows the seed
    other = forget_vs_unseen_loss(forget, unseen, **groups, seed=2, n_boot=300)
    assert (other["low"], other["high"]) == (by_patient["low"], by_patient["high"])
    assert ((other["bootstrap_low"], other["bootstrap_high"])
            != (by_patient["bootstrap_low"], by_patient["bootstrap_high"]))
    without = forget_vs_unseen_loss(forget, unseen, **groups, n_boot=0)
    assert "bootstrap_low" not in without and without["low"] == by_patient["low"]


def test_forget_vs_unseen_loss_interval_is_the_patient_jackknife_with_student_t():
    """Leave-one-patient-out AUCs, recomputed by hand on each side, give the interval."""
    from scipy.stats import t as student_t
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    rng = np.random.default_rng(36)
    forget, unseen = rng.gamma(2, 0.5, 45), rng.gamma(2, 0.6, 60)
    f_groups, u_groups = rng.integers(0, 9, 45), rng.integers(100, 112, 60)

    def auc(f, u):
        return roc_auc_score(np.r_[np.ones(len(f)), np.zeros(len(u))], -np.r_[f, u])

    terms = []
    for losses, groups, first in ((forget, f_groups, True), (unseen, u_groups, False)):
        left_out = np.array([auc(forget, unseen[groups != g]) if not first else
                             auc(forget[groups != g], unseen) for g in np.unique(groups)])
        k = len(left_out)
        terms.append(((k - 1) / k * np.sum((left_out - left_out.mean()) ** 2), k))
    var = sum(v for v, _ in terms)
    df = var ** 2 / sum(v ** 2 / (k - 1) for v, k in terms)
    half = student_t.ppf(0.975, df) * np.sqrt(var)
    out = forget_vs_unseen_loss(forget, unseen, forget_groups=f_groups, unseen_groups=u_groups,
                                n_boot=0)
    point = auc(forget, unseen)
    assert out["auc"] == pytest.approx(point, abs=1e-12)
    assert out["se"] == pytest.approx(np.sqrt(var), rel=1e-9)
    assert out["df"] == pytest.approx(df, rel=1e-9)
    assert (out["low"], out["high"]) == pytest.approx((point - half, point + half), abs=1e-12)
    # one patient on a side: that side adds no term (the bootstrap could not vary it either)
    single = forget_vs_unseen_loss(forget, unseen, forget_groups=np.zeros(45, int),
                                   unseen_groups=u_groups, n_boot=0)
    assert single["se"] == pytest.approx(np.sqrt(terms[1][0]), rel=1e-9)
    assert single["df"] == pytest.approx(terms[1][1] - 1)


def test_forget_vs_unseen_loss_interval_holds_chance_at_its_nominal_rate():
    """Null data like the benchmark's (23 patients a side, 1-15 rows each, rows of a patient
    correlated): the headline interval holds the true 0.5 within 1.5 points of 95% (94.5%
    here). The patient-bootstrap percentile interval it replaced falls short on the same draws
    (92.2% here; 92.1% on the benchmark's retrained models)."""
    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    rng = np.random.default_rng(0)
    reps, held = 4000, np.zeros(2)
    for rep in range(reps):
        sides = []
        for first in (0, 100):
            sizes = rng.integers(1, 16, 23)
            effect = np.repeat(rng.normal(0, np.sqrt(0.3), 23), sizes)  # within-patient corr 0.3
            sides.append((np.exp(effect + rng.normal(0, np.sqrt(0.7), sizes.sum())),
                          np.repeat(np.arange(23) + first, sizes)))
        (forget, f_groups), (unseen, u_groups) = sides
        out = forget_vs_unseen_loss(forget, unseen, forget_groups=f_groups,
                                    unseen_groups=u_groups, seed=rep, n_boot=200)
        held += [out["low"] <= 0.5 <= out["high"],
                 out["bootstrap_low"] <= 0.5 <= out["bootstrap_high"]]
    coverage, bootstrap_coverage = held / reps   # each ± 0.35 points (one binomial s.e.)
    assert abs(coverage - 0.95) <= 0.015, coverage
    assert abs(bootstrap_coverage - 0.95) > 0.015, bootstrap_coverage


def test_forget_vs_unseen_loss_inputs_are_checked():
    from forgetmi.evaluation.mia import forget_vs_unseen_loss
    losses = np.ones(40)
    with pytest.raises(ValueError, match="forget and unseen rows"):
        forget_vs_unseen_loss(losses, losses, forget_groups=patients(40),
                              unseen_groups=patients(40))
    with pytest.raises(ValueError, match="for both"):
        forget_vs_unseen_loss(losses, losses, forget_groups=patients(40))
    with pytest.raises(ValueError, match="NaN"):
        forget_vs_unseen_loss(np.r_[losses, np.nan], losses)
    with pytest.raises(ValueError, match="empty"):
        forget_vs_unseen_loss(np.array([]), losses)


def test_training_losses_sum_every_present_head():
    from forgetmi.evaluation.mia import sample_losses, training_losses
    rng = np.random.default_rng(34)
    p = {"label": rng.integers(0, 4, 30)}
    for head in ("image", "text", "joint"):
        p[f"{head}_logits"] = rng.normal(0, 1, (30, 4))
    expected = sum(sample_losses(p, h) for h in ("image", "text", "joint"))
    assert np.allclose(training_losses(p), expected)
    only_joint = {"label": p["label"], "joint_logits": p["joint_logits"]}
    assert np.allclose(training_losses(only_joint), sample_losses(p, "joint"))
    with pytest.raises(ValueError, match="no head logits"):
        training_losses({"label": p["label"]})
