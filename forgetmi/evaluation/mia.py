"""Membership inference against unlearned models: the paper's attack, population and LiRA tests.

Three levels, weakest first:

- :func:`svc_mia_paper` / :func:`svc_mia_per_batch`: the paper's SVC on losses (SPEC §6), kept
  so published numbers can be compared like for like; the per-batch one is the release's variant.
- :func:`population_attack`: one attack model for all samples, on several per-sample signals
  (:func:`attack_features`), balanced, cross-validated, reported as AUC and TPR at low FPR.
  :func:`forget_vs_unseen_attack` uses the same machinery on forget rows vs unseen (test) rows.
- :func:`forget_vs_unseen_loss`, the headline: the loss-threshold attack's AUC on forget rows
  vs every unseen row (0.5 = forgotten as if never seen), with a patient jackknife t
  interval.
- :func:`lira_scores`: per-example likelihood-ratio tests with shadow models (LiRA, Carlini et
  al. 2022; U-LiRA for unlearning, Hayes et al. 2024), which population attacks under-estimate.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm
from scipy.stats import t as student_t
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from forgetmi.evaluation.metrics import HEADS, as_class_labels, as_logits, log_softmax

log = logging.getLogger("forgetmi.evaluation")

LOW_FPRS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}
REFIT_CELLS = 4_000_000  # resamples × rows × features refit at once, to bound memory


# --- per-sample signals -----------------------------------------------------------------------

def _head_log_probs(predictions: Mapping[str, np.ndarray], head: str) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    if f"{head}_logits" not in predictions:
        raise ValueError(f"no '{head}_logits' in predictions (keys: {sorted(predictions)})")
    labels = as_class_labels(predictions["label"])
    logits = as_logits(predictions[f"{head}_logits"], len(labels))
    return labels, log_softmax(logits)


def sample_losses(predictions: Mapping[str, np.ndarray], head: str = "joint") -> np.ndarray:
    """Cross-entropy of each row's true class under ``head``: the paper's MIA signal."""
    labels, log_probs = _head_log_probs(predictions, head)
    return -log_probs[np.arange(len(labels)), labels]


def training_losses(predictions: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each row's training loss: the sum of every present head's cross-entropy, as the model
    was trained to lower them together. An attack on it sees a row remembered by any head."""
    heads = [h for h in HEADS if f"{h}_logits" in predictions]
    if not heads:
        raise ValueError(f"no head logits in predictions (keys: {sorted(predictions)})")
    return np.sum([sample_losses(predictions, h) for h in heads], axis=0)


def lira_statistic(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled true-class confidence log(p/(1−p)), computed as z_y − logsumexp_{k≠y} z_k.

    The direct form keeps its precision where p rounds to 1 (memorised members), and the
    statistic is close to Gaussian across shadow models, which LiRA's fits assume.
    """
    labels = as_class_labels(labels)
    logits = as_logits(logits, len(labels))
    rows = np.arange(len(labels))
    others = logits.copy()
    others[rows, labels] = -np.inf
    return logits[rows, labels] - logsumexp(others, axis=1)


def summed_lira_statistic(predictions: Mapping[str, np.ndarray]) -> np.ndarray:
    """:func:`lira_statistic` summed over every present head: the logit-scaled counterpart of
    :func:`training_losses` (the headline's signal), so U-LiRA reads every head as the headline
    does, on a scale whose spread across shadows is close to Gaussian."""
    heads = [h for h in HEADS if f"{h}_logits" in predictions]
    if not heads:
        raise ValueError(f"no head logits in predictions (keys: {sorted(predictions)})")
    return np.sum([lira_statistic(predictions[f"{h}_logits"], predictions["label"])
                   for h in heads], axis=0)


def attack_features(predictions: Mapping[str, np.ndarray],
                    heads: tuple[str, ...] = HEADS) -> tuple[np.ndarray, list[str]]:
    """Per-row attack signals and their column names.

    For each head present: ``loss``, ``confidence`` (max softmax), ``entropy``, ``true_prob``
    (softmax of the true class) and ``true_logit`` (its logit-scaled form, which keeps the
    spread that ``true_prob`` squeezes against 1). With ``image_embedding`` and
    ``text_embedding``, also ``image_text_cosine``: memorised pairs can sit unusually close.
    """
    columns, names = [], []
    for head in heads:
        if f"{head}_logits" not in predictions:
            continue
        labels, log_probs = _head_log_probs(predictions, head)
        probs = np.exp(log_probs)
        true_log_prob = log_probs[np.arange(len(labels)), labels]
        columns += [-true_log_prob, probs.max(axis=1), -(probs * log_probs).sum(axis=1),
                    np.exp(true_log_prob), lira_statistic(predictions[f"{head}_logits"], labels)]
        names += [f"{head}_{n}" for n in ("loss", "confidence", "entropy", "true_prob",
                                          "true_logit")]
    if "image_embedding" in predictions and "text_embedding" in predictions:
        columns.append(_row_cosine(predictions["image_embedding"], predictions["text_embedding"]))
        names.append("image_text_cosine")
    if not columns:
        raise ValueError(f"no '<head>_logits' among {sorted(predictions)}")
    return np.stack(columns, axis=1), names


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows; a zero row has similarity 0 (norm floored)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"expected two non-empty (n, d) arrays of one shape, got {a.shape} "
                         f"and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


# --- the paper's attack -----------------------------------------------------------------------

def _losses(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty: the attack needs samples on every side")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def svc_mia_paper(retain_losses: np.ndarray, test_losses: np.ndarray,
                  forget_losses: np.ndarray) -> float:
    """Fraction of forget samples an SVC calls member, per-sample losses (SPEC §6).

    SVC(C=3, RBF, gamma="auto") fit on retain losses (member, 1) vs test losses (non-member,
    0), as in the paper, without balancing or held-out validation: retain outnumbers test
    roughly 10:1, so this leans towards "member" whatever the model; prefer
    :func:`population_attack` for conclusions and use this to compare with published numbers.
    """
    retain = _losses("retain_losses", retain_losses)
    test = _losses("test_losses", test_losses)
    forget = _losses("forget_losses", forget_losses)
    x = np.concatenate([retain, test])[:, None]
    y = np.r_[np.ones(len(retain)), np.zeros(len(test))]
    attack = SVC(C=3, kernel="rbf", gamma="auto").fit(x, y)
    return float(attack.predict(forget[:, None]).mean())


def batch_means(values: np.ndarray, batch_size: int) -> np.ndarray:
    """Means of consecutive chunks of ``batch_size`` (the last chunk may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    values = np.asarray(values, dtype=np.float64).ravel()
    starts = np.arange(0, len(values), batch_size)
    return np.add.reduceat(values, starts) / np.diff(np.r_[starts, len(values)])


def svc_mia_per_batch(retain_losses: np.ndarray, test_losses: np.ndarray,
                      forget_losses: np.ndarray, batch_size: int = 32) -> float:
    """The RELEASE's variant of :func:`svc_mia_paper`: the same SVC on per-BATCH mean losses.

    Each set is cut into consecutive chunks of ``batch_size`` (the last may be shorter) and each
    chunk's mean loss is one sample, so the score moves in steps of 1/n_forget_batches. With
    batch 32 the 3/6/10% forget sets (201/401/674 rows) give the paper's steps 1/7, 1/13, 1/22.
    Only for like-for-like comparison with published numbers.
    """
    return svc_mia_paper(*(batch_means(_losses(name, v), batch_size) for name, v in
                           (("retain_losses", retain_losses), ("test_losses", test_losses),
                            ("forget_losses", forget_losses))))


def svc_mia_report(retain_losses: np.ndarray, test_losses: np.ndarray,
                   forget_losses: np.ndarray, batch_size: int = 32) -> dict[str, float]:
    """Both SVC attacks under keys that say which is which."""
    return {"svc_mia_per_sample": svc_mia_paper(retain_losses, test_losses, forget_losses),
            f"svc_mia_release_per_batch{batch_size}":
                svc_mia_per_batch(retain_losses, test_losses, forget_losses, batch_size),
            "svc_mia_release_n_forget_batches": float(-(-len(np.ravel(forget_losses))
                                                        // batch_size))}


# --- population attack ------------------------------------------------------------------------

def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """True-positive rate at false-positive rate ``fpr`` on the empirical ROC of ``scores``.

    Linear interpolation between the two consecutive ROC vertices around ``fpr`` (attainable by
    picking one of their thresholds at random; never the more optimistic convex hull); at an FPR
    that several vertices share, the highest TPR counts. When ``fpr`` is below 1/n_negatives
    the value is an interpolation towards FPR 0, not a measured operating point.
    """
    fprs, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.searchsorted(fprs, fpr, side="right")) - 1  # last vertex with FPR <= fpr
    if i < 0:
        return 0.0
    if fprs[i] == fpr or i == len(fprs) - 1:
        return float(tprs[i])
    step = (fpr - fprs[i]) / (fprs[i + 1] - fprs[i])
    return float(tprs[i] + step * (tprs[i + 1] - tprs[i]))


def build_attack_model(kind: str = "logistic", seed: int = 0):
    """``logistic`` (default): standardised logistic regression. The attack sets are a few
    hundred rows and the signals are monotone in membership, so a linear model shows the signal
    without fitting noise, and it is fast enough to run per seed and size. ``boosting``: a
    small gradient-boosted tree model, for signals that are not monotone."""
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if kind == "boosting":
        return HistGradientBoostingClassifier(max_depth=3, max_iter=100, random_state=seed)
    raise ValueError(f"unknown attack model {kind!r}; expected 'logistic' or 'boosting'")


def _features(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array = array[:, None] if array.ndim == 1 else array
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty (n,) or (n, d) array, got shape "
                         f"{np.shape(values)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def _groups(name: str, groups, n_rows: int) -> np.ndarray | None:
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n_rows,):
        raise ValueError(f"{name} must have one entry per row ({n_rows}), got {groups.shape}")
    return groups


def _balanced(member: np.ndarray, nonmember: np.ndarray, rng: np.random.Generator):
    """Row indices keeping min(n_member, n_nonmember) of each side, so AUC 0.5 = chance and
    the 0.5 threshold means something."""
    n = min(len(member), len(nonmember))
    keep = [np.sort(rng.choice(len(side), n, replace=False)) for side in (member, nonmember)]
    return keep[0], keep[1]


def _splitter(folds: int, seed: int, y: np.ndarray, groups: np.ndarray | None):
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if min(np.bincount(y.astype(int))) < folds:
        raise ValueError(f"{folds} folds need at least {folds} samples per side after balancing")
    if groups is None:
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    if len(np.unique(groups)) < folds:
        raise ValueError(f"{folds} group-aware folds need at least {folds} distinct groups")
    return StratifiedGroupKFold(folds, shuffle=True, random_state=seed)


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, folds: int,
                       seed: int, kind: str = "logistic") -> np.ndarray:
    """Member probability of each row from a model that never saw it (nor, with groups, any
    row of its patient: a model could otherwise recognise the patient, not the membership)."""
    scores = np.empty(len(y))
    for train, held_out in _splitter(folds, seed, y, groups).split(x, y, groups):
        model = build_attack_model(kind, seed).fit(x[train], y[train])
        scores[held_out] = model.predict_proba(x[held_out])[:, 1]
    return scores


def _group_means(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, member_of = np.unique(groups, return_inverse=True)
    return ids, np.bincount(member_of, values) / np.bincount(member_of)


def patient_auc(y: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """AUC over patients, each scored by the mean of its rows; mixed patients are left out."""
    _, label = _group_means(y, groups)
    _, score = _group_means(scores, groups)
    pure = (label == 0) | (label == 1)
    if (~pure).any():
        log.warning("patient-level AUC: %d patients have member and non-member rows; left out",
                    int((~pure).sum()))
    label, score = label[pure], score[pure]
    if len(np.unique(label)) < 2:
        return float("nan")
    return float(roc_auc_score(label, score))


def _low_fpr_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    n_negatives = int((y == 0).sum())
    out = {name: tpr_at_fpr(y, scores, fpr) for name, fpr in LOW_FPRS.items()}
    out["min_fpr_step"] = 1.0 / n_negatives
    for name, fpr in LOW_FPRS.items():
        if n_negatives * fpr < 1:
            log.warning("%s: only %d non-members, so FPR moves in steps of %.4f; the value is "
                        "interpolated towards FPR 0, not measured", name, n_negatives,
                        1.0 / n_negatives)
    return out


def _two_sides(names: tuple[str, str], a, b, a_groups, b_groups):
    """Both sides' features (same columns) and groups (for both or neither), checked."""
    x, y = _features(f"{names[0]}_features", a), _features(f"{names[1]}_features", b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} features have {x.shape[1]} and "
                         f"{y.shape[1]} columns")
    if (a_groups is None) != (b_groups is None):
        raise ValueError(f"give groups for both {names[0]} and {names[1]} rows, or for neither")
    return (x, y, _groups(f"{names[0]}_groups", a_groups, len(x)),
            _groups(f"{names[1]}_groups", b_groups, len(y)))


def _balanced_design(positive, negative, positive_groups, negative_groups, seed: int):
    """The attack's rows (positives labelled 1), sides balanced by seeded subsampling, their
    groups (or None) and the kept indices of each side."""
    keep_p, keep_n = _balanced(positive, negative, np.random.default_rng(seed))
    x = np.concatenate([positive[keep_p], negative[keep_n]])
    y = np.r_[np.ones(len(keep_p)), np.zeros(len(keep_n))]
    groups = (None if positive_groups is None
              else np.concatenate([positive_groups[keep_p], negative_groups[keep_n]]))
    return x, y, groups, (keep_p, keep_n)


def population_attack(member_features: np.ndarray, nonmember_features: np.ndarray,
                      target_features: np.ndarray | None = None, *,
                      member_groups: np.ndarray | None = None,
                      nonmember_groups: np.ndarray | None = None,
                      target_groups: np.ndarray | None = None, seed: int = 0, folds: int = 5,
                      model: str = "logistic", roc_points: int = 0) -> dict:
    """A cross-validated attack telling members (e.g. retain) from non-members (test).

    The larger side is subsampled (seeded) to the smaller's size. With ``member_groups`` and
    ``nonmember_groups`` (patient ids) the folds keep patients whole. Returns the out-of-fold
    ``auc``, ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr`` (see :func:`tpr_at_fpr`;
    ``min_fpr_step`` = 1/n_non-members says how fine the FPR axis is), ``patient_auc`` (with
    groups) and ``n_per_side``. With ``target_features`` (the forget set), a model refit on all
    balanced rows scores them: ``target_member_probability`` (mean), ``target_member_fraction``
    (probability ≥ 0.5), ``mia_efficacy`` = 1 − that fraction (SalUn/SCRUB: higher = looks
    less like a member), and with ``target_groups`` the per-patient fraction. With
    ``roc_points`` > 0 the out-of-fold ROC curve too (``roc``: fpr/tpr lists, at most that many
    points), for plots.
    """
    members, nonmembers, member_groups, nonmember_groups = _two_sides(
        ("member", "nonmember"), member_features, nonmember_features, member_groups,
        nonmember_groups)
    x, y, groups, (keep_m, keep_n) = _balanced_design(members, nonmembers, member_groups,
                                                      nonmember_groups, seed)
    scores = out_of_fold_scores(x, y, groups, folds, seed, model)
    out = {"auc": float(roc_auc_score(y, scores)), **_low_fpr_metrics(y, scores),
           "n_per_side": float(len(keep_m))}
    if roc_points:
        out["roc"] = roc_curve_points(y, scores, roc_points)
    if groups is not None:
        out["patient_auc"] = patient_auc(y, scores, groups)
    if target_features is not None:
        out.update(_target_metrics(build_attack_model(model, seed).fit(x, y),
                                   _features("target_features", target_features), x.shape[1],
                                   target_groups))
    return out


def roc_curve_points(y: np.ndarray, scores: np.ndarray, limit: int = 200) -> dict[str, list]:
    """The empirical ROC curve, thinned to at most ``limit`` points (ends kept)."""
    fpr, tpr, _ = roc_curve(y, scores)
    if len(fpr) > limit:
        keep = np.unique(np.linspace(0, len(fpr) - 1, limit).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def _target_metrics(attack, target: np.ndarray, n_columns: int,
                    target_groups: np.ndarray | None) -> dict[str, float]:
    if target.shape[1] != n_columns:
        raise ValueError(f"target features have {target.shape[1]} columns, the attack "
                         f"{n_columns}")
    probability = attack.predict_proba(target)[:, 1]
    called_member = float((probability >= 0.5).mean())
    out = {"target_member_probability": float(probability.mean()),
           "target_member_fraction": called_member, "mia_efficacy": 1.0 - called_member}
    groups = _groups("target_groups", target_groups, len(target))
    if groups is not None:
        _, per_patient = _group_means(probability, groups)
        out["target_patient_member_fraction"] = float((per_patient >= 0.5).mean())
    return out


# --- headline: forget rows vs unseen rows -----------------------------------------------------

def _check_unseen_patients(forget_groups: np.ndarray | None,
                           unseen_groups: np.ndarray | None) -> None:
    if forget_groups is None:
        return
    shared = np.intersect1d(forget_groups, unseen_groups)
    if len(shared):
        raise ValueError(f"{len(shared)} patient(s) have forget and unseen rows: the unseen "
                         "side must be patients the model never trained on")


def _side_jackknife(placements: np.ndarray, groups: np.ndarray | None) -> tuple[float, int]:
    """One side's delete-one-patient jackknife term of the AUC's variance, and its patients.

    ``placements``: each row's share of the other side's rows it beats (ties ½), whose mean
    is the AUC, so leaving out patient k gives the exact AUC without them,
    (Σ placements − patient k's sum) / (rows − patient k's rows). The term is
    (K−1)/K Σ_k (AUC₋ₖ − their mean)²: a patient's correlated rows count as one unit, and
    unlike DeLong's structural components summed per patient it follows a large patient's
    weight in the AUC (closer to 95% with unequal rows per patient in simulation). A side of
    one patient adds nothing it could estimate (the patient bootstrap redraws that patient
    every time, to the same effect). Rows are the units where ``groups`` is None."""
    if groups is None:
        sums, rows = placements, np.ones(len(placements))
    else:
        _, unit = np.unique(groups, return_inverse=True)
        sums, rows = np.bincount(unit, weights=placements), np.bincount(unit).astype(float)
    k = len(sums)
    if k < 2:
        return 0.0, k
    left_out = (sums.sum() - sums) / (rows.sum() - rows)
    return float((k - 1) / k * np.sum((left_out - left_out.mean()) ** 2)), k


def clustered_auc_interval(forget_losses: np.ndarray, unseen_losses: np.ndarray,
                           forget_groups: np.ndarray | None = None,
                           unseen_groups: np.ndarray | None = None,
                           alpha: float = 0.05) -> dict:
    """AUC of lower loss on the forget side, with a patient-clustered jackknife t interval.

    The variance is the sum of the two sides' delete-one-patient jackknife terms
    (:func:`_side_jackknife`); the interval is AUC ± t·se with the Welch–Satterthwaite degrees
    of freedom of those two terms (each with its patients − 1), clipped to [0, 1]. Returns
    ``auc``, ``low``, ``high``, ``se`` and ``df``. Exact and cheap: no resampling and no
    forget × unseen matrix (placements by binary search)."""
    forget, unseen = np.sort(forget_losses), np.sort(unseen_losses)
    # Lower loss = member: a forget row's placement is the share of unseen rows above it.
    below_f = np.searchsorted(unseen, forget_losses, side="left")
    at_or_below_f = np.searchsorted(unseen, forget_losses, side="right")
    forget_placements = ((len(unseen) - at_or_below_f + 0.5 * (at_or_below_f - below_f))
                         / len(unseen))
    below_u = np.searchsorted(forget, unseen_losses, side="left")
    at_or_below_u = np.searchsorted(forget, unseen_losses, side="right")
    unseen_placements = (below_u + 0.5 * (at_or_below_u - below_u)) / len(forget)
    auc = float(forget_placements.mean())
    var_f, k_f = _side_jackknife(forget_placements, forget_groups)
    var_u, k_u = _side_jackknife(unseen_placements, unseen_groups)
    se = math.sqrt(var_f + var_u)
    # the t quantile, not the normal one: se rests on ~20 patients a side, itself uncertain
    parts = [v ** 2 / (k - 1) for v, k in ((var_f, k_f), (var_u, k_u)) if k > 1 and v > 0]
    df = (var_f + var_u) ** 2 / sum(parts) if parts else math.inf
    half = float(student_t.ppf(1 - alpha / 2, df)) * se if se > 0 else 0.0
    return {"auc": auc, "low": max(0.0, auc - half), "high": min(1.0, auc + half), "se": se,
            "df": df}


def forget_vs_unseen_loss(forget_losses: np.ndarray, unseen_losses: np.ndarray, *,
                          forget_groups: np.ndarray | None = None,
                          unseen_groups: np.ndarray | None = None, seed: int = 0,
                          n_boot: int = 1000, alpha: float = 0.05,
                          signal: str = "loss (lower = member)") -> dict:
    """The headline forgetting metric: the loss-threshold attack's AUC, forget rows vs unseen.

    ``auc`` = P(a forget row's loss < an unseen row's loss) + ½ P(tie), over every pair of a
    forget row and an unseen row (the test fold: patients no model trained on). 0.5 means the
    model treats its forget rows as if it had never seen them; above 0.5, it still fits them
    better than rows it never saw; below 0.5, it fits them worse (over-forgotten, itself a
    signal). The attack has nothing to train, so no row is spent on fitting it and no fold
    split adds noise: on the benchmark its patient-bootstrap intervals were 1.4–2.3× narrower
    than the learned attack's (:func:`forget_vs_unseen_attack`), and the retrained model's
    value stayed within 0.03 of 0.5 over three seeds where the learned attack's ranged from
    0.435 to 0.537. Every unseen row counts: the sides need not be balanced for an AUC.
    :func:`forgetmi.evaluation.evaluate` feeds it :func:`training_losses` (all heads), which
    separated the benchmark's original from its retrained model more than the joint head's
    loss alone (0.720 vs 0.697, seed 0).

    ``low``/``high``: the ``1 − alpha`` patient-clustered jackknife interval with a Student-t
    quantile (:func:`clustered_auc_interval`; rows as units without groups); ``se`` and
    ``df`` are its standard error and degrees of freedom. It replaced the patient-bootstrap
    percentile interval, which held 0.5 in 92–93.5% of reassignments of retrained models'
    never-seen patients against its nominal 95% (``forgetmi check-holdout --retrained``): with
    about 23 patients a side the bootstrap's variance is short by (K−1)/K, and its quantiles
    ignore that the spread is itself estimated from so few patients.
    ``bootstrap_low``/``bootstrap_high``: that percentile interval from ``n_boot`` resamples
    drawing whole patients (or rows) with replacement within each side, seeded by ``seed``,
    kept to compare with results recorded before; ``n_boot=0`` leaves it out.
    """
    forget = _losses("forget_losses", forget_losses)
    unseen = _losses("unseen_losses", unseen_losses)
    if (forget_groups is None) != (unseen_groups is None):
        raise ValueError("give groups for both forget and unseen rows, or for neither")
    f_groups = _groups("forget_groups", forget_groups, len(forget))
    u_groups = _groups("unseen_groups", unseen_groups, len(unseen))
    _check_unseen_patients(f_groups, u_groups)
    if n_boot < 0:
        raise ValueError(f"n_boot must be 0 (no bootstrap interval) or more, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    unit = "patient" if f_groups is not None else "row"
    headline = clustered_auc_interval(forget, unseen, f_groups, u_groups, alpha)
    out = {**headline, "n_forget": int(len(forget)), "n_unseen": int(len(unseen)),
           "n_boot": int(n_boot), "signal": signal,
           "interval": f"{unit} jackknife, Student t (Welch-Satterthwaite df), "
                       f"{1 - alpha:.0%}"}
    if n_boot:
        out["bootstrap_low"], out["bootstrap_high"] = percentile_bootstrap_auc(
            forget, unseen, f_groups, u_groups, seed, n_boot, alpha)
        out["bootstrap_interval"] = f"{unit} bootstrap, percentile {1 - alpha:.0%}"
    if f_groups is not None:
        out["n_forget_patients"] = int(len(np.unique(f_groups)))
        out["n_unseen_patients"] = int(len(np.unique(u_groups)))
    return out


def percentile_bootstrap_auc(forget: np.ndarray, unseen: np.ndarray,
                             forget_groups: np.ndarray | None,
                             unseen_groups: np.ndarray | None, seed: int = 0,
                             n_boot: int = 1000, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile ``1 − alpha`` interval of the lower-loss AUC from ``n_boot`` resamples of
    whole patients (rows without groups) within each side; seeded. Narrow with few patients
    a side (see :func:`forget_vs_unseen_loss`)."""
    from forgetmi.evaluation.bootstrap import resample_weights

    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng([seed, 2])
    chunk = max(1, REFIT_CELLS // (len(forget) + len(unseen)))
    aucs = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        # Lower loss = member: the forget side is "positive" when its negated loss is higher.
        aucs.append(weighted_auc(-forget, -unseen,
                                 resample_weights(len(forget), b, rng, forget_groups),
                                 resample_weights(len(unseen), b, rng, unseen_groups)))
    low, high = np.percentile(np.concatenate(aucs), [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def forget_vs_unseen_attack(forget_features: np.ndarray, unseen_features: np.ndarray, *,
                            forget_groups: np.ndarray | None = None,
                            unseen_groups: np.ndarray | None = None, seed: int = 0,
                            folds: int = 5, model: str = "logistic", n_boot: int = 1000,
                            alpha: float = 0.05) -> dict:
    """A learned forget-vs-unseen attack: can a classifier on several signals tell the forget
    rows from unseen rows? (Stored beside the headline, :func:`forget_vs_unseen_loss`.)

    Unseen rows are the test fold's (patients no model trained on). The attack is the
    population attack's (:func:`attack_features` signals, sides balanced by seeded
    subsampling, ``folds``-fold cross-validation keeping patients whole) with the forget rows as
    the positive side, so its out-of-fold ``auc`` is 0.5 when the model treats its forget rows
    as if it had never seen them and clearly above 0.5 when it still remembers them (lower
    loss, higher confidence). The AUC counts the pairs of a forget and an unseen row held out
    together (:func:`within_fold_auc`): each fold's attack ranks only its own held-out rows, so
    the folds' different intercepts cannot move it (``pooled_auc``, over all pairs as the
    population attack counts them, is kept for comparison). Compare it with the retrained
    model's value, not only with 0.5: forget and test patients may differ a little even for a
    model that saw neither.

    ``low``/``high``: a percentile ``1 − alpha`` interval from ``n_boot`` patient-bootstrap
    resamples with the attack refit on each (:func:`refit_bootstrap_auc`; ``n_boot_used`` of
    them defined); deterministic given ``seed``. ``n_forget`` and ``n_unseen``: the rows per
    side after balancing (equal), and with groups their patient counts.
    """
    forget, unseen, forget_groups, unseen_groups = _two_sides(
        ("forget", "unseen"), forget_features, unseen_features, forget_groups, unseen_groups)
    _check_unseen_patients(forget_groups, unseen_groups)
    if forget_groups is not None:
        for name, groups in (("forget", forget_groups), ("unseen", unseen_groups)):
            if len(np.unique(groups)) < folds:
                raise ValueError(f"{folds} patient-grouped folds need at least {folds} patients "
                                 f"on each side; the {name} rows have {len(np.unique(groups))}")
    x, y, groups, (keep_f, keep_u) = _balanced_design(forget, unseen, forget_groups,
                                                      unseen_groups, seed)
    scores = out_of_fold_scores(x, y, groups, folds, seed, model)
    fold = fold_ids(y, groups, folds, seed)
    n = len(keep_f)
    low, high, used = refit_bootstrap_auc(x, y, groups, fold, seed, model, n_boot, alpha)
    out = {"auc": within_fold_auc(scores, y, fold, np.ones(len(y))),
           "pooled_auc": float(roc_auc_score(y, scores)), "low": low, "high": high,
           "n_forget": n, "n_unseen": len(keep_u), "n_boot": n_boot, "n_boot_used": used,
           "interval": f"{'patient' if groups is not None else 'row'} bootstrap, attack refit, "
                       f"percentile {1 - alpha:.0%}"}
    if groups is not None:
        out["n_forget_patients"] = int(len(np.unique(groups[:n])))
        out["n_unseen_patients"] = int(len(np.unique(groups[n:])))
    return out


def weighted_auc(positive: np.ndarray, negative: np.ndarray, positive_weights: np.ndarray,
                 negative_weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``positive`` over ``negative`` scores for each row of (B, n) multiplicity
    weights: P(positive > negative) + ½ P(tie), every pair weighted by its two counts."""
    order = np.argsort(negative, kind="stable")
    ranked = negative[order]
    below_or_at = np.concatenate([np.zeros((len(negative_weights), 1)),
                                  np.cumsum(negative_weights[:, order], axis=1)], axis=1)
    below = below_or_at[:, np.searchsorted(ranked, positive, side="left")]
    tied = below_or_at[:, np.searchsorted(ranked, positive, side="right")] - below
    wins = (positive_weights * (below + 0.5 * tied)).sum(axis=1)
    return wins / (positive_weights.sum(axis=1) * negative_weights.sum(axis=1))


def refit_bootstrap_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
                        fold: np.ndarray, seed: int, kind: str = "logistic", n_boot: int = 1000,
                        alpha: float = 0.05) -> tuple[float, float, int]:
    """Percentile interval of the cross-validated attack AUC, the attack refit per resample.

    Each resample draws whole groups (patients) with replacement within each side (rows without
    groups); every drawn row keeps its ``fold`` (:func:`fold_ids`; copies of a patient stay
    together), each fold's attack is refit on the drawn rows of the other folds (a row drawn c
    times counts c times) and :func:`within_fold_auc` is recomputed with the draw counts as
    weights. Refitting matters: the fold models share training rows, so resampling
    fixed out-of-fold scores gave intervals too narrow for an attack with no signal (they
    held 0.5 in about 85% of simulated no-signal cases). Refit, they are somewhat wide instead
    (held 0.5 in 98-100%, 1.25-1.4× the spread of the AUC across fresh samples): a resample
    trains the attack on ~63% distinct patients, a noisier attack than the one measured.
    The logistic attack is refit for all resamples at once
    (:func:`_logistic_refit_scores`); others through sklearn, one resample at a time. Returns
    ``(low, high, resamples used)``; seeded, so the same inputs give the same interval.
    """
    from forgetmi.evaluation.bootstrap import resample_weights

    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng([seed, 1])  # its own stream, apart from the balancing draw
    sides = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    counts = np.zeros((n_boot, len(y)))
    for rows in sides:
        counts[:, rows] = resample_weights(len(rows), n_boot, rng,
                                           None if groups is None else groups[rows])
    if kind == "logistic":
        aucs = _logistic_refit_aucs(x, y, fold, counts)
    else:
        aucs = np.array([_weighted_oof_auc(x, y, fold, c, seed, kind) for c in counts])
    aucs = aucs[np.isfinite(aucs)]
    if len(aucs) == 0:
        return math.nan, math.nan, 0
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(len(aucs))


def _logistic_refit_scores(x: np.ndarray, y: np.ndarray, fold: np.ndarray, counts: np.ndarray,
                           max_steps: int = 50) -> np.ndarray:
    """Out-of-fold member probabilities of :func:`build_attack_model`'s ``logistic`` attack
    refit for every row of draw counts ``counts`` (B, n) at once.

    The same model, solved in batch: standardisation with the drawn rows' mean and (ddof 0)
    standard deviation, then Newton steps on Σ counts·log-loss + ½‖w‖² (C = 1, intercept not
    penalised), the objective sklearn's LogisticRegression minimises; refitting through sklearn
    once per resample and fold would take a minute per evaluated run.
    """
    scores = np.zeros(counts.shape)
    eye = np.diag(np.r_[np.ones(x.shape[1]), 0.0])  # no penalty on the intercept
    for k in np.unique(fold):
        train, held_out = fold != k, fold == k
        weights, rows, labels = counts[:, train], x[train], y[train]
        total = weights.sum(axis=1, keepdims=True)
        mean = weights @ rows / total
        scale = np.sqrt(np.maximum(weights @ rows ** 2 / total - mean ** 2, 0.0))
        scale[scale < 10 * np.finfo(float).eps] = 1.0  # as StandardScaler: constant columns
        design = (rows[None] - mean[:, None]) / scale[:, None]
        design = np.concatenate([design, np.ones(design.shape[:2] + (1,))], axis=2)
        beta = np.zeros((len(counts), design.shape[2]))
        for _ in range(max_steps):
            p = 1.0 / (1.0 + np.exp(-(design @ beta[..., None])[..., 0]))
            grad = ((weights * (p - labels))[:, None] @ design)[:, 0] + beta @ eye
            curvature = (weights * p * (1 - p))[:, :, None] * design
            step = np.linalg.solve(design.transpose(0, 2, 1) @ curvature + eye, grad[..., None])
            beta -= step[..., 0]
            if np.abs(step).max() < 1e-10:
                break
        held = (x[held_out][None] - mean[:, None]) / scale[:, None]
        logit = (held @ beta[:, :-1, None])[..., 0] + beta[:, -1:]
        scores[:, held_out] = 1.0 / (1.0 + np.exp(-logit))
    return scores


def _logistic_refit_aucs(x: np.ndarray, y: np.ndarray, fold: np.ndarray,
                         counts: np.ndarray) -> np.ndarray:
    """The out-of-fold AUC of each resample (NaN where a fold's draw lost one side)."""
    aucs = np.full(len(counts), np.nan)
    usable = np.ones(len(counts), dtype=bool)
    for k in np.unique(fold):
        for side in (1, 0):
            usable &= counts[:, (fold != k) & (y == side)].sum(axis=1) > 0
    chunk = max(1, REFIT_CELLS // (len(y) * (x.shape[1] + 1)))
    rows = np.flatnonzero(usable)
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk]
        scores = _logistic_refit_scores(x, y, fold, counts[block])
        for b, row in enumerate(block):
            aucs[row] = within_fold_auc(scores[b], y, fold, counts[row])
    return aucs


def _weighted_oof_auc(x: np.ndarray, y: np.ndarray, fold: np.ndarray, counts: np.ndarray,
                      seed: int, kind: str) -> float:
    scores = np.zeros(len(y))
    for k in np.unique(fold):
        train = np.flatnonzero((fold != k) & (counts > 0))
        drawn = np.repeat(train, counts[train].astype(np.int64))
        if len(np.unique(y[drawn])) < 2:
            return math.nan  # a fold's training draw lost one side
        held_out = fold == k
        model = build_attack_model(kind, seed).fit(x[drawn], y[drawn])
        scores[held_out] = model.predict_proba(x[held_out])[:, 1]
    return within_fold_auc(scores, y, fold, counts)


def fold_ids(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> np.ndarray:
    """Each row's held-out fold in :func:`out_of_fold_scores`'s split (the same seeded one)."""
    fold = np.empty(len(y), dtype=int)
    for k, (_, held_out) in enumerate(_splitter(folds, seed, y, groups).split(y, y, groups)):
        fold[held_out] = k
    return fold


def within_fold_auc(scores: np.ndarray, y: np.ndarray, fold: np.ndarray,
                    counts: np.ndarray) -> float:
    """AUC over the (positive, negative) pairs held out in the same fold, each pair weighted by
    the two rows' counts: P(positive scores higher) + ½ P(tie)."""
    wins = pairs = 0.0
    for k in np.unique(fold):
        positive, negative = (fold == k) & (y == 1), (fold == k) & (y == 0)
        weight = counts[positive].sum() * counts[negative].sum()
        if weight > 0:
            wins += weight * weighted_auc(scores[positive], scores[negative],
                                          counts[None, positive], counts[None, negative])[0]
            pairs += weight
    return float(wins / pairs) if pairs else math.nan


# --- per-example likelihood-ratio attack (LiRA / U-LiRA) ---------------------------------------

def _shadow_fit(name: str, stats: np.ndarray, n_rows: int, fix_variance: bool,
                min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std of shadow statistics (NaN = no statistic from that shadow).

    ``fix_variance`` pools the within-example variance over all examples, which Carlini et al.
    recommend with few shadow models. Examples with fewer than two statistics get NaN.
    """
    stats = np.asarray(stats, dtype=np.float64)
    stats = stats[:, None] if stats.ndim == 1 else stats
    if stats.ndim != 2 or len(stats) != n_rows:
        raise ValueError(f"{name} must be ({n_rows}, n_shadows), got shape {stats.shape}")
    count = np.isfinite(stats).sum(axis=1)
    if (count < 2).any():
        log.warning("LiRA: %d examples have fewer than two %s; their scores are NaN",
                    int((count < 2).sum()), name)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(stats, axis=1) / count, np.nan)
        squares = np.nansum((stats - mean[:, None]) ** 2, axis=1)
        if fix_variance:
            usable = count >= 2
            pooled = np.sqrt(squares[usable].sum() / max((count[usable] - 1).sum(), 1))
            std = np.full(n_rows, pooled)
        else:
            std = np.sqrt(squares / (count - 1))
    std = np.where(count >= 2, np.maximum(std, min_std), np.nan)
    return mean, std


def lira_scores(target_stat: np.ndarray, in_stats: np.ndarray | None, out_stats: np.ndarray,
                fix_variance: bool = False, min_std: float = 1e-4) -> dict[str, np.ndarray]:
    """Per-example likelihood-ratio membership test (LiRA; Carlini et al. 2022).

    ``target_stat`` (n,): :func:`lira_statistic` of the audited model. ``in_stats`` /
    ``out_stats`` (n, shadows): the statistic from shadow models that did / did not see each
    example (NaN where a shadow gives none). For unlearning (U-LiRA), "in" shadows are models
    trained with the example and then unlearned, "out" shadows are retrained without it.

    Online (``in_stats`` given): ``log_ratio`` = log N(t; μ_in, σ_in) − log N(t; μ_out, σ_out).
    Offline (``in_stats`` is None): the one-sided test against the out fit only; ``log_ratio``
    is NaN. Both give ``p_value`` = P(out statistic ≥ t) (small = member evidence) and
    ``score`` to rank by, larger = more member-like (online: log_ratio; offline: −log p_value).
    """
    target = np.asarray(target_stat, dtype=np.float64).ravel()
    if target.size == 0:
        raise ValueError("target_stat is empty")
    mu_out, sd_out = _shadow_fit("out_stats", out_stats, len(target), fix_variance, min_std)
    log_p = norm.logsf(target, mu_out, sd_out)
    out = {"p_value": np.exp(log_p)}
    if in_stats is None:
        out["log_ratio"] = np.full(len(target), np.nan)
        out["score"] = -log_p
    else:
        mu_in, sd_in = _shadow_fit("in_stats", in_stats, len(target), fix_variance, min_std)
        out["log_ratio"] = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
        out["score"] = out["log_ratio"]
    return out


def vulnerability_summary(scores: np.ndarray,
                          thresholds: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)) -> dict[str, float]:
    """Quantiles of per-example scores (larger = more member-like) and the fraction above each
    threshold; NaN scores (too few shadows) are left out and counted in ``n_defined``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("scores is empty")
    defined = scores[np.isfinite(scores)]
    out = {"n": float(scores.size), "n_defined": float(defined.size)}
    if defined.size == 0:
        return out | {k: float("nan") for k in ("mean", "q50", "q90", "q99", "max")}
    out |= {"mean": float(defined.mean()), "q50": float(np.quantile(defined, 0.5)),
            "q90": float(np.quantile(defined, 0.9)), "q99": float(np.quantile(defined, 0.99)),
            "max": float(defined.max())}
    for t in thresholds:
        out[f"frac_above_{t:g}"] = float((defined > t).mean())
    return out


# --- output similarity ------------------------------------------------------------------------

def logit_similarity(logits_a: np.ndarray, logits_b: np.ndarray) -> dict[str, float]:
    """How close model a's outputs are to model b's (pass the retrained model as b).

    ``one_minus_cosine``: 1 − mean row-wise cosine similarity of the logits (the paper's; 0 =
    same direction). ``kl_b_a``: mean KL(softmax(b) ‖ softmax(a)), the expectation under b,
    i.e. how badly a's predictive distribution codes the reference's.
    """
    a, b = np.asarray(logits_a, dtype=np.float64), np.asarray(logits_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"expected two non-empty (n, K) logit arrays of one shape, got "
                         f"{a.shape} and {b.shape}")
    log_a, log_b = log_softmax(a), log_softmax(b)
    kl = (np.exp(log_b) * (log_b - log_a)).sum(axis=1)
    return {"one_minus_cosine": float(1.0 - _row_cosine(a, b).mean()),
            "kl_b_a": float(kl.mean())}
