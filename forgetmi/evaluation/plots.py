"""PNG plots for ``forgetmi report``: forgetting vs utility, per-size bars, attack ROC curves,
and a sweep's score against its swept parameters.

The Agg backend is selected before pyplot is imported, so plots render on compute nodes and in
CI without a display. Each plot reads the summary table of :func:`forgetmi.evaluation.report.
summarise` (columns ``size``, ``label``, ``model``, ``<col>_mean``, ``<col>_std``; the sweep's
plot, :func:`forgetmi.evaluation.by_parameter.parameter_table`) and is skipped, with a log line
saying why, when the inputs lack what it needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from forgetmi.utils.atomic import atomic_path  # noqa: E402

log = logging.getLogger("forgetmi.report")

METHOD_MARKERS = "o^vD<>pPhX"
SIZE_PANELS = (("forget_auc", "forget AUC (joint)"), ("mia", "MIA (SVC, per-sample)"))


@dataclass(frozen=True)
class RocCurve:
    """One model's population-attack ROC curve (one seed) for one forget size."""

    size: str
    label: str
    model: str
    seed: int
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float = float("nan")


def label_styles(pairs: Sequence[tuple[str, str]]) -> dict[str, dict]:
    """Colour and marker per label, fixed across panels; the retrained model (the target) is a
    large black star, the original a grey square."""
    styles: dict[str, dict] = {}
    # tab10 without its grey (index 7), which is the original's
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    methods = 0
    for label, model in pairs:
        if label in styles:
            continue
        if model == "retrained":
            styles[label] = {"color": "black", "marker": "*", "size": 15}
        elif model == "original":
            styles[label] = {"color": "0.55", "marker": "s", "size": 8}
        else:
            styles[label] = {"color": palette[methods % len(palette)],
                             "marker": METHOD_MARKERS[methods % len(METHOD_MARKERS)], "size": 8}
            methods += 1
    return styles


def _styles(summary: pd.DataFrame) -> dict[str, dict]:
    return label_styles(list(zip(summary["label"], summary["model"])))


def _err(std: float) -> float | None:
    return None if not np.isfinite(std) else float(std)


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    log.debug("plot written: %s", path)
    return path


def _figure_legend(fig, handles: dict) -> None:
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(handles)), frameon=False)


# The trade-off plot's forgetting axis: the headline when the runs carry it, else forget AUC.
TRADEOFF_Y = (("fvu_auc", "forget-vs-unseen attack AUC\n(0.5: forgotten as if never seen)"),
              ("forget_auc", "forget AUC (lower: more forgetting)"))


def plot_tradeoff(summary: pd.DataFrame, path: str | Path) -> Path | None:
    """Forgetting vs utility, one panel per forget size: x = test AUC, y = the forget-vs-unseen
    attack AUC (forget AUC for runs evaluated without it). The retrained model is the target
    (dotted crosshair); the original, which trained on the forget rows, is marked "remembers"."""
    path = Path(path)
    for key, y_label in TRADEOFF_Y:
        if f"{key}_mean" in summary and summary[f"{key}_mean"].notna().any():
            break
    data = summary.dropna(subset=["test_auc_mean", f"{key}_mean"])
    if data.empty:
        log.info("skipping %s: no model has both a test AUC and a forgetting score", path.name)
        return None
    sizes = list(dict.fromkeys(data["size"]))
    styles = _styles(summary)
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 4.2), squeeze=False,
                             sharex=True, sharey=True)
    handles: dict = {}
    for ax, size in zip(axes[0], sizes):
        if key == "fvu_auc":
            ax.axhline(0.5, color="tab:green", lw=1.0, alpha=0.6)
            ax.annotate("chance: cannot tell forget rows from unseen", (0.01, 0.5),
                        xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(0, 4), fontsize=7, color="tab:green")
        for row in data[data["size"] == size].to_dict("records"):
            style = styles[row["label"]]
            x, y = row["test_auc_mean"], row[f"{key}_mean"]
            if row["model"] == "retrained":  # the target: crosshair through its point
                ax.axvline(x, color="black", ls=":", lw=0.8)
                ax.axhline(y, color="black", ls=":", lw=0.8)
                ax.annotate("target (retrained)", (x, y), textcoords="offset points",
                            xytext=(6, 6), fontsize=8)
            elif row["model"] == "original":
                ax.annotate("remembers (original)", (x, y), textcoords="offset points",
                            xytext=(6, -12), fontsize=8, color="0.35")
            artist = ax.errorbar(x, y, xerr=_err(row["test_auc_std"]),
                                 yerr=_err(row[f"{key}_std"]), fmt=style["marker"],
                                 color=style["color"], ms=style["size"], capsize=3,
                                 zorder=3 if row["model"] == "retrained" else 2)
            handles.setdefault(row["label"], artist)
        ax.set_title(f"forget set {size}")
        ax.set_xlabel("test AUC (higher: more utility)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_label)
    _figure_legend(fig, handles)
    fig.suptitle("Forgetting vs utility (mean ± std over seeds): the closer to the target, "
                 "the better")
    return _save(fig, path)


def plot_sizes(summary: pd.DataFrame, path: str | Path) -> Path | None:
    """Grouped bars per forget size: forget AUC and MIA of each model."""
    path = Path(path)
    panels = []
    for key, title in SIZE_PANELS:
        if summary[f"{key}_mean"].notna().any():
            panels.append((key, title))
        else:
            log.info("%s: no run defines %s, its panel is left out", path.name, key)
    if not panels:
        log.info("skipping %s: no forget AUC or MIA in the inputs", path.name)
        return None
    sizes = list(dict.fromkeys(summary["size"]))
    labels = list(dict.fromkeys(summary["label"]))
    styles = _styles(summary)
    width = 0.8 / len(labels)
    models = dict(zip(summary["label"], summary["model"]))
    wide = max(6.0, 0.35 * len(labels) * len(sizes) + 2)
    fig, axes = plt.subplots(len(panels), 1, figsize=(wide, 3.2 * len(panels)), squeeze=False)
    handles: dict = {}
    indexed = summary.set_index(["size", "label"])
    for ax, (key, title) in zip(axes[:, 0], panels):
        for j, label in enumerate(labels):
            cells = [(i, indexed.loc[(size, label)]) for i, size in enumerate(sizes)
                     if (size, label) in indexed.index]
            cells = [(i, c) for i, c in cells if np.isfinite(c[f"{key}_mean"])]
            if not cells:
                continue
            x = np.array([i for i, _ in cells]) + (j - (len(labels) - 1) / 2) * width
            means = [c[f"{key}_mean"] for _, c in cells]
            stds = np.nan_to_num([c[f"{key}_std"] for _, c in cells])
            target = models[label] == "retrained"
            bars = ax.bar(x, means, width, yerr=stds, capsize=2, color=styles[label]["color"],
                          edgecolor="black" if target else "none",
                          hatch="//" if target else None, alpha=0.6 if target else 0.9)
            handles.setdefault(label, bars)
        ax.set_xticks(np.arange(len(sizes)), [f"forget {s}" for s in sizes])
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    _figure_legend(fig, handles)
    fig.suptitle("Per forget size (mean ± std over seeds; hatched = retrained, the target)")
    return _save(fig, path)


def plot_mia_roc(curves: Sequence[RocCurve], path: str | Path) -> Path | None:
    """Population-attack ROC curves, one panel per forget size, log FPR axis."""
    path = Path(path)
    if not curves:
        log.info("skipping %s: no run has a population-attack ROC curve", path.name)
        return None
    sizes = list(dict.fromkeys(c.size for c in curves))
    positive = [c.fpr[c.fpr > 0].min() for c in curves if (c.fpr > 0).any()]
    floor = min([1e-2, *positive])  # the log axis cannot show FPR 0: start at the first step
    styles = label_styles([(c.label, c.model) for c in curves])
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes), 4.2), squeeze=False,
                             sharey=True)
    chance = np.logspace(np.log10(floor), 0, 100)
    for ax, size in zip(axes[0], sizes):
        ax.plot(chance, chance, color="0.5", ls="--", lw=0.8, label="chance")
        for curve in (c for c in curves if c.size == size):
            style = styles[curve.label]
            auc = f"AUC {curve.auc:.3f}, " if np.isfinite(curve.auc) else ""
            ax.plot(np.clip(curve.fpr, floor, 1.0), curve.tpr, color=style["color"],
                    lw=2.0 if curve.model == "retrained" else 1.3,
                    label=f"{curve.label} ({auc}seed {curve.seed})")
        ax.set_xscale("log")
        ax.set_xlim(floor, 1.0)
        ax.set_ylim(0.0, 1.01)
        ax.set_title(f"forget set {size}")
        ax.set_xlabel("false-positive rate (log)")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("true-positive rate")
    fig.suptitle("Population membership attack on the forget set (first seed)")
    return _save(fig, path)


def _numeric(values: Sequence) -> bool:
    present = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in present)


def _levels(values: Sequence) -> list:
    """A key's distinct values in axis order: numbers ascending, categories by name."""
    distinct = list(dict.fromkeys(values))
    return sorted(distinct, key=float) if _numeric(distinct) else sorted(distinct, key=str)


def _score_against(ax, table: pd.DataFrame, key: str) -> None:
    """Each trial's mean score at its value of ``key`` (dots) and the mean over the trials at
    each value (line): numbers on a numeric axis (log where they span a wide positive range),
    categories evenly spaced."""
    data = table.dropna(subset=["score"])
    levels = _levels(list(table[key]))
    if _numeric(levels):
        x = data[key].astype(float)
        positions = np.array(levels, dtype=float)
        if positions.min() > 0 and positions.max() / positions.min() >= 20:
            ax.set_xscale("log")
    else:
        index = {str(v): i for i, v in enumerate(levels)}
        x = data[key].map(lambda v: index[str(v)])
        positions = np.arange(len(levels), dtype=float)
        ax.set_xticks(positions, [str(v) for v in levels])
    ax.scatter(x, data["score"], color="tab:blue", alpha=0.6, s=24, label="trial")
    means = [data["score"][x == position].mean() for position in positions]
    ax.plot(positions, means, color="black", marker="_", markersize=14, label="mean of trials")
    ax.set_xlabel(key)
    ax.set_ylabel("mean score (lower = closer to retraining)")
    ax.grid(alpha=0.3)


def _heat_map(ax, fig, table: pd.DataFrame, keys: Sequence[str]) -> None:
    """Mean score over the trials at each pair of values of two keys; blank where none ran."""
    rows, cols = _levels(list(table[keys[0]])), _levels(list(table[keys[1]]))
    grid = np.full((len(rows), len(cols)), np.nan)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            cell = table[(table[keys[0]].astype(str) == str(row))
                         & (table[keys[1]].astype(str) == str(col))]["score"].dropna()
            if len(cell):
                grid[i, j] = cell.mean()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):  # dark text on the light (low-score) end of the scale
            light = image.norm(value) < 0.5
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8,
                    color="black" if light else "white")
    ax.set_yticks(np.arange(len(rows)), [str(v) for v in rows])
    ax.set_xticks(np.arange(len(cols)), [str(v) for v in cols])
    ax.set_ylabel(keys[0])
    ax.set_xlabel(keys[1])
    fig.colorbar(image, ax=ax, label="mean score (lower = closer to retraining)")


def plot_by_parameter(table: pd.DataFrame, keys: Sequence[str], path: str | Path) -> Path | None:
    """A sweep's mean score against its swept keys: score vs value for one key, a heat map of
    the mean score for two, one score-vs-value panel per key for more."""
    path = Path(path)
    if not keys or table["score"].dropna().empty:
        log.info("skipping %s: %s", path.name, "no swept parameter" if not keys
                 else "no trial has a score (evaluate with --retrained)")
        return None
    if len(keys) == 2:
        fig, ax = plt.subplots(figsize=(1.2 * len(set(table[keys[1]].astype(str))) + 3.5,
                                        0.6 * len(set(table[keys[0]].astype(str))) + 2.5))
        _heat_map(ax, fig, table, keys)
    else:
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False,
                                 sharey=True)
        for ax, key in zip(axes[0], keys):
            _score_against(ax, table, key)
        for ax in axes[0][1:]:
            ax.set_ylabel("")
        axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle("Sweep: mean score over each trial's replicates, by parameter")
    return _save(fig, path)


def make_plots(summary: pd.DataFrame, curves: Sequence[RocCurve],
               out_dir: str | Path) -> list[Path]:
    """All report plots into ``out_dir``; returns the paths written (skipped plots left out)."""
    out_dir = Path(out_dir)
    written = [plot_tradeoff(summary, out_dir / "tradeoff.png"),
               plot_sizes(summary, out_dir / "sizes.png"),
               plot_mia_roc(curves, out_dir / "mia_roc.png")]
    return [p for p in written if p is not None]
