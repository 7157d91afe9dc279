"""Per-example attacks calibrated by retrained references, and paired differences to retraining.

A population attack thresholds every row's loss at one value, but rows differ in how hard they
are: a hard row of a model that remembers it can still have a higher loss than an easy row the
model never saw. Calibrating each row by models that never trained on it removes that part
(Carlini et al. 2022's offline LiRA, reduced to its mean; Watson et al. 2022's difficulty
calibration): the signal is the row's loss *minus the references' mean loss for that row*.
The references are retrained models (they saw neither the forget nor the holdout rows) of
other seeds than the judged model, so a retrained model is calibrated by its peers exactly as
every method is, and sits at chance by construction of the question, not of the code.

:func:`forget_quality` is OpenUnlearning's forget_quality (after TOFU): a two-sample
Kolmogorov-Smirnov test between the per-row statistic of the judged model and of the retrained
model on the forget rows; a high p-value means the two distributions cannot be told apart.

:func:`paired_differences`: the judged model minus the retrained model of the same seed on the
headline attack AUC and the test AUC, each with its patient-bootstrap standard error drawn with
the *same* resampled patients for both models (paired), which :mod:`~forgetmi.evaluation.verdicts`
combines over seeds.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp

from forgetmi.evaluation.bootstrap import resample_weights
from forgetmi.evaluation.metrics import weighted_full_metrics
from forgetmi.evaluation.mia import forget_vs_unseen_loss, tpr_at_fpr, weighted_auc

CALIBRATED_SIGNAL = ("training loss minus the retrained references' mean training loss for "
                     "the same row (lower = member)")


def calibrated_attack(forget_losses: np.ndarray, unseen_losses: np.ndarray,
                      forget_reference: np.ndarray, unseen_reference: np.ndarray, *,
                      forget_groups: np.ndarray, unseen_groups: np.ndarray, n_references: int,
                      seed: int = 0, n_boot: int = 1000) -> dict:
    """AUC (the headline's patient jackknife 95% interval, :func:`forget_vs_unseen_loss`) and
    TPR at 1% FPR of the calibrated loss attack.

    ``*_reference``: the references' mean loss on the same rows, in the same order."""
    forget = np.asarray(forget_losses, float) - np.asarray(forget_reference, float)
    unseen = np.asarray(unseen_losses, float) - np.asarray(unseen_reference, float)
    out = forget_vs_unseen_loss(forget, unseen, forget_groups=forget_groups,
                                unseen_groups=unseen_groups, seed=seed, n_boot=n_boot,
                                signal=CALIBRATED_SIGNAL)
    labels = np.r_[np.ones(len(forget)), np.zeros(len(unseen))]
    scores = -np.r_[forget, unseen]
    out["tpr_at_1pct_fpr"] = tpr_at_fpr(labels, scores, 0.01)
    # Below one false positive the rate is interpolated, not measured: say so.
    out["tpr_at_1pct_fpr_measured"] = bool(len(unseen) >= 100)
    out["n_references"] = int(n_references)
    return out


def forget_quality(judged: np.ndarray, retrained: np.ndarray) -> dict:
    """Two-sample KS test of a per-row forget statistic, judged model vs retrained model."""
    judged, retrained = np.asarray(judged, float), np.asarray(retrained, float)
    if len(judged) == 0 or len(retrained) == 0:
        raise ValueError("forget quality needs forget rows for both models")
    result = ks_2samp(judged, retrained)
    return {"ks_statistic": float(result.statistic), "p_value": float(result.pvalue),
            "n": int(len(judged)),
            "statistic": "training loss on each forget row (KS: judged vs retrained model)"}


def _paired(values_a: np.ndarray, values_b: np.ndarray, point: float) -> dict:
    diffs = values_a - values_b
    diffs = diffs[np.isfinite(diffs)]
    low, high = np.quantile(diffs, [0.025, 0.975]) if len(diffs) else (np.nan, np.nan)
    return {"diff": float(point), "se": float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
            "low": float(low), "high": float(high), "n_boot_used": int(len(diffs))}


def paired_differences(judged: dict, reference: dict, *, unseen: str, seed: int = 0,
                       n_boot: int = 1000) -> dict:
    """The judged model minus the reference on the headline attack AUC (forget vs ``unseen``
    rows, training loss) and on the test AUC (joint head), bootstrapped over patients with the
    same draws for both models.

    ``judged``/``reference``: ``{partition: {"loss": per-row training loss, "label", "logits"
    (joint head), "group"}}`` on the same rows in the same order."""
    rng = np.random.default_rng([seed, 31])
    out = {}
    forget_w = resample_weights(len(judged["forget"]["loss"]), n_boot, rng,
                                judged["forget"]["group"])
    unseen_w = resample_weights(len(judged[unseen]["loss"]), n_boot, rng,
                                judged[unseen]["group"])
    ones_f = np.ones((1, forget_w.shape[1]))
    ones_u = np.ones((1, unseen_w.shape[1]))

    def attack(model, wf, wu):
        return weighted_auc(-model["forget"]["loss"], -model[unseen]["loss"], wf, wu)

    point = attack(judged, ones_f, ones_u)[0] - attack(reference, ones_f, ones_u)[0]
    out["fvu_auc"] = _paired(attack(judged, forget_w, unseen_w),
                             attack(reference, forget_w, unseen_w), point)
    if "test" in judged and "test" in reference:
        test_w = resample_weights(len(judged["test"]["label"]), n_boot, rng,
                                  judged["test"]["group"])
        ones_t = np.ones((1, test_w.shape[1]))

        def test_auc(model, w):
            return weighted_full_metrics(model["test"]["label"], model["test"]["logits"],
                                         w)["auc"]

        point = test_auc(judged, ones_t)[0] - test_auc(reference, ones_t)[0]
        out["test_auc"] = _paired(test_auc(judged, test_w), test_auc(reference, test_w), point)
    out["unseen"] = unseen
    out["interval"] = "paired patient bootstrap (the same patients drawn for both models), 95%"
    return out
