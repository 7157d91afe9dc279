"""Is the holdout drawn like the forget set? Checked over many stand-in draws, metadata only.

What makes a stand-in row memorable is known to the generator (``Cohort.memorable``): label
noise, where its written label differs from its true grade (``severity != true_severity``), and
content, where an atypical patient's row shows a milder grade than its true one (the
``atypical`` knob, off by default); only a model that memorised the row, or the patient, fits
it. For each generator seed this draws the cohort (no images are rendered), the forget sets and
the holdout exactly as :func:`generate_dataset` does, and compares the memorable share (of
either kind, and of each) and the rows per patient of the largest forget set, the holdout and
the TEST fold. Over draws, forget − holdout should centre on 0; forget − TEST need not
(TEST patients are drawn uniformly, forget patients by size).
"""

from __future__ import annotations

import math

import pandas as pd
from scipy.stats import t as student_t

from forgetmi.data.splits import draw_forget_sets
from forgetmi.synthetic.cohort import LABEL_NOISE_SD, TEST_ROW_FRACTION, build_cohort
from forgetmi.synthetic.generate import FORGET_PERCENTS

SIDES = ("forget", "holdout", "test")
# The memorable share's figures: either kind, label noise only, atypical content only.
KINDS = {"memorable": "either", "label_memorable": "label", "content_memorable": "content"}


def draw_sides(n_patients: int, seed: int, test_fraction: float = TEST_ROW_FRACTION,
               label_noise: float = LABEL_NOISE_SD, atypical: float = 0.0,
               percents=FORGET_PERCENTS) -> dict:
    """One draw: per side, rows, patients, rows per patient and memorable share per kind."""
    cohort = build_cohort(n_patients, seed, test_fraction, label_noise, atypical)
    table = cohort.table
    split = table[["subject_id", "study_id", "dicom_id", "severity", "fold"]]
    draw = draw_forget_sets(split, percents, seed=seed)
    memorable = cohort.memorable()
    frames = {"forget": draw.forget_sets[max(draw.forget_sets)], "holdout": draw.holdout,
              "test": split[split["fold"] == "TEST"]}
    row = {"seed": seed, "atypical": atypical}
    for side, frame in frames.items():
        row[f"{side}_rows"] = len(frame)
        row[f"{side}_patients"] = int(frame["subject_id"].nunique())
        row[f"{side}_rows_per_patient"] = len(frame) / max(1, frame["subject_id"].nunique())
        for figure, kind in KINDS.items():
            row[f"{side}_{figure}"] = float(memorable.loc[frame.index, kind].mean())
    return row


def compare_draws(n_draws: int, n_patients: int, first_seed: int = 0, **settings
                  ) -> tuple[pd.DataFrame, dict]:
    """``n_draws`` draws (generator seeds first_seed, ...): the per-draw table and, for
    forget − holdout and forget − TEST, the mean difference of the memorable shares and of the
    rows per patient with a 95% t interval over draws. The label-noise and content shares get
    their own entries only where the cohort has both kinds (``atypical`` above 0)."""
    table = pd.DataFrame([draw_sides(n_patients, first_seed + i, **settings)
                          for i in range(n_draws)])
    figures = _figures(table)
    summary = {}
    for side in SIDES:  # how much one draw's share can stray: the spread a single run sees
        for figure in figures:
            share = table[f"{side}_{figure}"]
            summary[f"{side}_{figure}_spread"] = {"mean": float(share.mean()),
                                                  "sd": float(share.std(ddof=1)),
                                                  "min": float(share.min()),
                                                  "max": float(share.max())}
    for other in ("holdout", "test"):
        for figure in (*figures, "rows_per_patient"):
            diff = (table[f"forget_{figure}"] - table[f"{other}_{figure}"]).to_numpy()
            mean = float(diff.mean())
            half = (float(student_t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1)
                          / math.sqrt(len(diff))) if len(diff) > 1 else math.nan)
            summary[f"forget_minus_{other}_{figure}"] = {
                "mean": mean, "low": mean - half, "high": mean + half,
                "sd": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
                "covers_0": bool(mean - half <= 0 <= mean + half)}
    return table, summary


def _figures(table: pd.DataFrame) -> list[str]:
    """The memorable shares worth reporting: either kind, and each kind when there are two."""
    return list(KINDS) if (table["atypical"] > 0).any() else ["memorable"]


def render(table: pd.DataFrame, summary: dict) -> str:
    figures = _figures(table)
    names = {"memorable": "memorable", "label_memorable": "label", "content_memorable": "content"}
    lines = [f"{'seed':>4}  " + "  ".join(
        " ".join(f"{side + ' ' + names[f]:>18}" for f in figures) + f" {'rows/pt':>7}"
        for side in SIDES)]
    for row in table.to_dict("records"):
        lines.append(f"{row['seed']:>4}  " + "  ".join(
            " ".join(f"{row[f'{side}_{f}']:>18.3f}" for f in figures)
            + f" {row[f'{side}_rows_per_patient']:>7.2f}" for side in SIDES))
    lines.append("")
    for key, s in summary.items():
        if "min" in s:
            lines.append(f"{key}: mean {s['mean']:.3f}, sd {s['sd']:.3f}, range "
                         f"{s['min']:.3f}-{s['max']:.3f}")
            continue
        lines.append(f"{key}: {s['mean']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}] (95% t "
                     f"interval over {len(table)} draws; sd {s['sd']:.3f}); "
                     f"{'covers' if s['covers_0'] else 'excludes'} 0")
    return "\n".join(lines)
