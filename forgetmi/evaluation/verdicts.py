"""How a method is judged against retraining: equivalence tests with a stated error rate.

"Method X matches retraining" is a claim of *equivalence*, so it is tested as one (TOST,
Schuirmann 1987): the method is declared equivalent on a figure when the difference to the
retrained model is shown, at level ``alpha``, to lie inside ``(−margin, +margin)``.

**Margins.** A difference smaller than how far two retrainings land apart means nothing, so
each margin comes from the retrained models themselves: with retrained values r_1..r_k of one
figure over k ≥ :data:`MIN_MARGIN_SEEDS` seeds, sd = their standard deviation (ddof=1) and

    margin = z_0.975 · √2 · sd

the half-width of the range that holds 95% of the differences between two retrainings of
different seeds (r_s − r_s' has standard deviation √2·sd when seeds are independent). Margins
can also be given (``--margins``), e.g. those another report measured (``--write-margins``).

**The difference and its error.** Per seed s, d_s = judged − retrained of the same seed, and its
patient-bootstrap standard error se_s with the same patients drawn for both models
(:func:`~forgetmi.evaluation.calibrated.paired_differences`): paired over seeds and over
patients. Over k seeds, d̄ = mean d_s, and

    SE² = var_s(d_s)/k + mean_s(se_s²)

the first term the training variation (seeds), the second the patients' (the same forget and
holdout patients for every seed, so averaging seeds does not shrink it; counting it whole is
conservative). Degrees of freedom by Welch-Satterthwaite with the bootstrap term taken as known:
df = (a + b)² (k − 1) / a², a = var_s(d_s)/k, b = mean_s(se_s²). With one seed the training
variation is not measured (df = ∞): the verdict is about this seed's patients only, and says so.

**Outcomes.** p_equivalent = max of the two one-sided p-values (H0: d ≤ −margin; H0: d ≥ margin);
p_differs = twice the smaller one-sided p-value of "d is beyond the margin" (H0: |d| ≤ margin),
capped at 1. Each family of p-values is Holm-corrected across the methods of one forget size and
figure. Then per figure: **equivalent** if adjusted p_equivalent < alpha, **differs** if adjusted
p_differs < alpha, else **inconclusive**. A method is equivalent to retraining when it is
equivalent on both the attack AUC and the test AUC (an intersection-union test: no further
correction), differs when it differs on either, and is otherwise inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import norm, t as student_t

from forgetmi.errors import DataError

MIN_MARGIN_SEEDS = 3
ALPHA = 0.05
Z975 = float(norm.ppf(0.975))
FIGURES = {"attack": "forget-vs-unseen attack AUC", "test": "test AUC"}
OUTCOMES = ("equivalent", "differs", "inconclusive")


@dataclass(frozen=True)
class Margins:
    """Equivalence margins per figure (``attack``, ``test``) and where they came from."""

    attack: float
    test: float
    source: str

    def __getitem__(self, figure: str) -> float:
        return {"attack": self.attack, "test": self.test}[figure]

    def to_dict(self) -> dict:
        return {"attack": self.attack, "test": self.test, "source": self.source}


def margin_from_spread(values: Sequence[float]) -> float:
    """z_0.975 · √2 · sd of the retrained models' values over seeds."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(values) < MIN_MARGIN_SEEDS:
        raise ValueError(f"{len(values)} retrained seed(s); a margin needs at least "
                         f"{MIN_MARGIN_SEEDS}")
    return float(Z975 * math.sqrt(2) * values.std(ddof=1))


def margins_from_retrained(attack: Sequence[float], test: Sequence[float],
                           where: str = "") -> Margins:
    """Margins from the retrained runs of several seeds (see the module's text)."""
    return Margins(attack=margin_from_spread(attack), test=margin_from_spread(test),
                   source=f"retrained-vs-retrained spread over {len(attack)} seeds"
                          + (f" ({where})" if where else "")
                          + ": z_0.975·√2·sd")


def parse_margins(text: str) -> Margins:
    """``attack=0.05,test=0.02`` or a YAML/JSON file with ``attack`` and ``test`` (and
    optionally ``source``), such as one ``forgetmi report --write-margins`` wrote."""
    from pathlib import Path

    path = Path(text)
    if path.is_file():
        from forgetmi.config import read_yaml
        doc = read_yaml(path, "margins file")
        source = str(doc.get("source", path))
    else:
        doc, source = {}, "given"
        for item in text.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise DataError(f"--margins: expected attack=A,test=T or a margins file, got "
                                f"{text!r}")
            doc[key.strip()] = value
        path = None
    values = {}
    for key in ("attack", "test"):
        try:
            values[key] = float(doc[key])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"expected a number for '{key}' (attack=A,test=T), got "
                            f"{doc.get(key)!r}", path, field=key) from None
        if not values[key] > 0:
            raise DataError(f"a margin must be positive, got {values[key]}", path, field=key)
    return Margins(values["attack"], values["test"], source)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def tost(diffs: Sequence[float], ses: Sequence[float | None], margin: float) -> dict:
    """The unadjusted test of one figure for one method (see the module's text)."""
    d = np.asarray(diffs, float)
    k = len(d)
    if k == 0:
        raise ValueError("no paired differences to test")
    known = [s for s in ses if s is not None and math.isfinite(s)]
    b = float(np.mean(np.square(known))) if known else 0.0
    a = float(d.var(ddof=1) / k) if k > 1 else None
    se = math.sqrt((a or 0.0) + b)
    if a is None or a == 0:
        df = math.inf
    else:
        df = (a + b) ** 2 * (k - 1) / a ** 2
    mean = float(d.mean())
    dist = norm if math.isinf(df) else student_t(df)
    if se == 0:  # no error at all (identical models): the point decides
        p_lower = p_upper = 0.0 if abs(mean) < margin else 1.0
        p_above = p_below = 0.0 if abs(mean) > margin else 1.0
        half = 0.0
    else:
        p_lower = float(dist.sf((mean + margin) / se))   # H0: d <= -margin
        p_upper = float(dist.cdf((mean - margin) / se))  # H0: d >= +margin
        p_above = float(dist.sf((mean - margin) / se))   # H0: d <= +margin (vs beyond above)
        p_below = float(dist.cdf((mean + margin) / se))  # H0: d >= -margin (vs beyond below)
        half = float(dist.ppf(1 - ALPHA) * se)
    return {"mean": mean, "se": se, "se_seeds": math.sqrt(a or 0.0), "se_patients": math.sqrt(b),
            "df": None if math.isinf(df) else df, "seeds": k,
            "ci90": [mean - half, mean + half], "margin": margin,
            "p_equivalent": max(p_lower, p_upper),
            "p_differs": min(1.0, 2 * min(p_above, p_below)),
            "patient_se_known": len(known) == k}


def outcome(p_equivalent: float, p_differs: float, alpha: float = ALPHA) -> str:
    if p_equivalent < alpha:
        return "equivalent"
    if p_differs < alpha:
        return "differs"
    return "inconclusive"


def combined(outcomes: Sequence[str]) -> str:
    """Equivalent on every figure; differs on any; else inconclusive."""
    if all(o == "equivalent" for o in outcomes):
        return "equivalent"
    if any(o == "differs" for o in outcomes):
        return "differs"
    return "inconclusive"


def decide(methods: dict[str, dict[str, tuple[list[float], list[float | None]]]],
           margins: Margins, alpha: float = ALPHA) -> dict[str, dict]:
    """Verdicts for every method of one forget size.

    ``methods``: label -> figure ("attack", "test") -> (per-seed differences to the retrained
    model, their patient-bootstrap standard errors). Holm runs across the methods per figure."""
    tests = {label: {fig: tost(*pairs, margins[fig]) for fig, pairs in figures.items()}
             for label, figures in methods.items()}
    for fig in FIGURES:
        labels = [label for label in tests if fig in tests[label]]
        for key in ("p_equivalent", "p_differs"):
            adjusted = holm([tests[label][fig][key] for label in labels])
            for label, value in zip(labels, adjusted):
                tests[label][fig][f"{key}_holm"] = value
    out = {}
    for label, figures in tests.items():
        for result in figures.values():
            result["outcome"] = outcome(result["p_equivalent_holm"], result["p_differs_holm"],
                                        alpha)
        out[label] = {"figures": figures,
                      "verdict": combined([figures[f]["outcome"] for f in FIGURES
                                           if f in figures])
                      if all(f in figures for f in FIGURES) else "inconclusive"}
    return out


def verdict_sentence(label: str, decision: dict, margins: Margins) -> str:
    """One line a reader can take away, with the test and the margins it used."""
    parts = []
    for fig, name in FIGURES.items():
        r = decision["figures"].get(fig)
        if r is None:
            parts.append(f"{name}: not measured")
            continue
        parts.append(f"{name} {r['mean']:+.3f} (90% CI [{r['ci90'][0]:+.3f}, "
                     f"{r['ci90'][1]:+.3f}], margin ±{margins[fig]:.3f}, Holm p "
                     f"{r['p_equivalent_holm']:.3f}): {r['outcome']}")
    seeds = max((r["seeds"] for r in decision["figures"].values()), default=0)
    caveat = " (one seed: training variation not measured)" if seeds == 1 else ""
    return f"{label}: **{decision['verdict']}**{caveat} — " + "; ".join(parts)
