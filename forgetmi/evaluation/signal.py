"""Can a report tell a difference? Checks that come before any claim about a method.

A table of unlearning results means something only if, on the same rows, the original model
(which trained on the forget set) is told apart from the retrained model (which never saw it),
and the retrained model sits where a model that never saw the rows should: at chance on the
forget-vs-unseen attack. :func:`signal_checks` states both per forget size and seed, with the
seeds' spread of the retrained and original test AUC; :func:`figures` and
:func:`reproduction_checks` record a run's figures and check that a rerun lands within their
spread. ``forgetmi report`` writes them into the report (and ``--record``/``--recorded``).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

from forgetmi.errors import DataError


def size_name(percent: float | None) -> str:
    """A forget size as the report names it ("10%", or "all" without one)."""
    return "all" if percent is None else f"{percent:g}%"


def _by(runs, model: str) -> dict[tuple[float | None, int], Any]:
    return {(r.forget_percent, r.seed): r for r in runs if r.model == model}


def signal_checks(runs: Sequence) -> list[dict]:
    """Per forget size and seed: the original's and the retrained model's headline intervals
    apart (the original's above), and the retrained model's interval holding 0.5."""
    original, retrained = _by(runs, "original"), _by(runs, "retrained")
    checks = []
    for key in sorted(set(original) & set(retrained), key=lambda k: (k[0] or 0.0, k[1])):
        o, r = original[key], retrained[key]
        (o_low, o_high), (r_low, r_high) = o.intervals["fvu_auc"], r.intervals["fvu_auc"]
        where = f"forget set {size_name(key[0])}, seed {key[1]}"
        checks.append({"check": f"{where}: the original remembers, the retrained model does "
                                "not (intervals apart)",
                       "ok": bool(o_low > r_high),
                       "detail": f"original {o.values['fvu_auc']:.3f} [{o_low:.3f}, "
                                 f"{o_high:.3f}], retrained {r.values['fvu_auc']:.3f} "
                                 f"[{r_low:.3f}, {r_high:.3f}]"})
        checks.append({"check": f"{where}: the retrained model's interval holds 0.5",
                       "ok": bool(r_low <= 0.5 <= r_high),
                       "detail": f"[{r_low:.3f}, {r_high:.3f}]"})
    return checks


def figures(runs: Sequence) -> dict:
    """Every model's headline attack AUC and test AUC per seed, with mean and std, by size."""
    out: dict = {}
    for run in runs:
        block = out.setdefault(size_name(run.forget_percent), {}).setdefault(run.label, {})
        for name, key in (("attack_auc", "fvu_auc"), ("test_auc", "test_auc")):
            if math.isfinite(run.values[key]):
                block.setdefault(name, {"per_seed": {}})["per_seed"][str(run.seed)] = \
                    run.values[key]
    for models in out.values():
        for model in models.values():
            for entry in model.values():
                values = list(entry["per_seed"].values())
                entry["mean"] = statistics.mean(values)
                entry["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def reproduction_checks(runs: Sequence, recorded: dict, source=None) -> list[dict]:
    """Each recorded model's mean attack AUC and mean test AUC reproduced within twice the
    recorded std over seeds (at least 0.01)."""
    now = figures(runs)
    checks = []
    if not isinstance(recorded, dict) or not recorded:
        raise DataError("expected recorded figures by forget size (forgetmi report --record)",
                        source)
    for size, models in sorted(recorded.items()):
        for model, record in sorted(models.items()):
            for name in ("attack_auc", "test_auc"):
                current = now.get(size, {}).get(model, {}).get(name)
                title = f"forget set {size}: {model} {name} reproduced"
                if current is None:
                    checks.append({"check": title, "ok": False, "detail": "not in this run"})
                    continue
                allowed = max(2 * record[name]["std"], 0.01)
                delta = current["mean"] - record[name]["mean"]
                checks.append({"check": f"{title} (|Δ mean| <= {allowed:.3f})",
                               "ok": bool(abs(delta) <= allowed),
                               "detail": f"{current['mean']:.3f} vs recorded "
                                         f"{record[name]['mean']:.3f} ± {record[name]['std']:.3f}"})
    return checks


def render(checks: Sequence[dict]) -> list[str]:
    return [f"- {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}" for c in checks]


def interval_coverage(forget_losses, unseen_losses, forget_groups, unseen_groups, *,
                      splits: int = 200, n_boot: int = 200, seed: int = 0) -> dict:
    """How often the headline's 95% interval holds 0.5 for a model that saw neither side.

    For a retrained model, the forget and holdout patients are alike (never trained on, drawn
    alike), so any fair-coin reassignment of those patients to two sides is another draw of the
    comparison the headline makes. Over ``splits`` reassignments, the share of intervals that
    hold 0.5 is the interval's coverage, to be read against its nominal 95%. ``coverage`` and
    ``mean_width``: the headline interval's
    (:func:`~forgetmi.evaluation.mia.forget_vs_unseen_loss`); ``bootstrap_coverage`` and
    ``bootstrap_mean_width``: the patient-bootstrap percentile interval's from ``n_boot``
    resamples (left out with ``n_boot=0``)."""
    import numpy as np

    from forgetmi.evaluation.mia import forget_vs_unseen_loss

    losses = np.r_[np.asarray(forget_losses, float), np.asarray(unseen_losses, float)]
    groups = np.r_[np.asarray(forget_groups), np.asarray(unseen_groups)]
    patients = np.unique(groups)
    rng = np.random.default_rng([seed, 41])
    held: dict[str, list[bool]] = {"": [], "bootstrap_": []}
    widths: dict[str, list[float]] = {"": [], "bootstrap_": []}
    aucs = []
    for i in range(splits):
        side = rng.random(len(patients)) < 0.5
        if side.all() or not side.any():
            continue
        first = np.isin(groups, patients[side])
        result = forget_vs_unseen_loss(losses[first], losses[~first],
                                       forget_groups=groups[first], unseen_groups=groups[~first],
                                       seed=seed + i, n_boot=n_boot)
        for prefix in held if n_boot else ("",):
            low, high = result[f"{prefix}low"], result[f"{prefix}high"]
            held[prefix].append(low <= 0.5 <= high)
            widths[prefix].append(high - low)
        aucs.append(result["auc"])
    n = len(aucs)
    out = {"splits": n, "mean_auc": float(np.mean(aucs)) if n else math.nan,
           "patients": int(len(patients)), "nominal": 0.95}
    for prefix in held if n_boot else ("",):
        out[f"{prefix}coverage"] = float(np.mean(held[prefix])) if n else math.nan
        out[f"{prefix}mean_width"] = float(np.mean(widths[prefix])) if n else math.nan
    return out
