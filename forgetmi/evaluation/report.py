"""Aggregate evaluated runs into the paper-style table and plots: ``forgetmi report``.

Reads the ``metrics.json`` that ``forgetmi evaluate`` writes for every run, groups the runs by
forget size and model label, and reports mean ± std over seeds: single-seed retrains are noisy
(SPEC §6), so a method is only judged against the retrained model over several seeds. The
headline column is the forget-vs-unseen loss-attack AUC (``mia.forget_vs_unseen``, unseen = the
holdout drawn like the forget set); per forget size the report decides each method against the
retrained model with equivalence tests (:mod:`forgetmi.evaluation.verdicts`) and names the model
closest to the retrained one among those inside the utility margin (:data:`CLOSENESS`), or says
why it cannot. Writes ``report.md``, ``report.csv``, ``report.json`` and PNG plots, atomically.
A sweep's runs (``sweep_params.json`` beside ``metrics.json``) are labelled by their trial
(:mod:`forgetmi.evaluation.trials`), so each trial is a row, and the sweep's trials are also
tabled and plotted against the swept parameters (``by_parameter.csv``, ``by_parameter.png``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from forgetmi.errors import DataError
from forgetmi.evaluation.signal import size_name
from forgetmi.evaluation.trials import SCORED, UNSCORED, SweepRun, read_params, score_block
from forgetmi.evaluation.trials import read_json as _read_json
from forgetmi.utils.atomic import write_csv, write_json, write_text

log = logging.getLogger("forgetmi.report")

SCHEMA = 1
# The per-run figures report.json keeps beside each run (what a ranking across kinds reads).
RANK_KEYS = ("gap_fvu_auc", "gap_test_auc")
METRICS_NAME = "metrics.json"
MODEL_RANK = {"original": 0, "retrained": 1}  # table order: these first, then methods by label
REQUIRED_FIELDS: dict[str, type] = {"model": str, "label": str, "seed": int, "metrics": dict}
RELEASE_MIA = "svc_mia_release_per_batch"  # evaluate appends the batch size: ..._per_batch32


@dataclass(frozen=True)
class Column:
    """One table column: where its per-run value lives in metrics.json and how it is shown."""

    key: str
    heading: str
    source: tuple[str, ...] | None  # None: derived from other runs (see add_relative_columns)
    kind: str                       # "score" | "gap" | "seconds" | "ratio": picks the format
    description: str
    interval: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # a run's (low, high)


FORGET_VS_UNSEEN = ("mia", "forget_vs_unseen")
COLUMNS: tuple[Column, ...] = (
    Column("fvu_auc", "Forget-vs-unseen AUC", (*FORGET_VS_UNSEEN, "auc"), "score",
           "the headline: AUC of the loss attack telling the forget rows from every row of "
           "the unseen patients — the holdout, drawn like the forget set and trained on by no "
           "model (the TEST fold where the data has no holdout) — P(a forget row's training "
           "loss is lower). 0.5 = the model treats its forget rows as if it had never seen "
           "them; clearly above 0.5 = it still remembers them; below 0.5 = it now fits them "
           "worse than unseen rows. A single run shows its patient jackknife 95% interval in "
           "brackets (runs scored before it: the patient-bootstrap percentile interval); the target is the retrained model's value",
           interval=((*FORGET_VS_UNSEEN, "low"), (*FORGET_VS_UNSEEN, "high"))),
    Column("gap_fvu_auc", "ΔFvU AUC", None, "gap",
           "forget-vs-unseen AUC minus the retrained model's (same size and seed): near 0 is "
           "the target"),
    Column("cal_auc", "Calibrated AUC", ("mia", "calibrated", "auc"), "score",
           "the per-example attack: each row's training loss minus the mean loss of retrained "
           "models of other seeds on that row (difficulty calibrated), forget rows vs the "
           "unseen rows; 0.5 = forgotten"),
    Column("cal_tpr_1pct", "Cal. TPR@1%FPR", ("mia", "calibrated", "tpr_at_1pct_fpr"), "score",
           "the calibrated attack's true-positive rate at 1% false-positive rate (0.01 = "
           "chance)"),
    Column("ks_p", "Forget quality", ("forget_quality", "p_value"), "score",
           "KS test p-value between this model's and the retrained model's training losses on "
           "the forget rows (OpenUnlearning's forget_quality): high = indistinguishable"),
    Column("learned_auc", "Learned FvU AUC", ("mia", "forget_vs_unseen_learned", "auc"),
           "score", "a learned attack on several signals (cross-validated, patients kept "
           "whole), forget rows vs the same unseen rows as the headline"),
    Column("fvt_auc", "FvTest AUC", ("mia", "forget_vs_test", "auc"), "score",
           "the headline's attack against the TEST fold instead of the holdout (secondary: "
           "TEST patients are drawn differently from forget patients)"),
    Column("fvu_auc_image", "FvU AUC (image)", ("mia", "forget_vs_unseen_image", "auc"),
           "score", "the headline's attack on the image head's loss alone (the release measured "
           "its attacks on the image head)"),
    Column("mia", "MIA", ("mia", "svc_mia_per_sample"), "score",
           "the paper's SVC attack on per-sample losses: fraction of forget rows called member"),
    Column("mia_batch", "MIA rel./batch", ("mia", RELEASE_MIA), "score",
           "the same attack on per-batch mean losses (batches of 32 in the release), as the "
           "release computed it: compare this one with the paper's numbers"),
    Column("pop_auc", "Pop. AUC", ("mia", "population", "auc"), "score",
           "population attack on several per-sample signals: ROC AUC (0.5 = chance)"),
    Column("pop_tpr_1pct", "TPR@1%FPR", ("mia", "population", "tpr_at_1pct_fpr"), "score",
           "population attack: true-positive rate at 1% false-positive rate"),
    Column("ulira", "U-LiRA", ("ulira", "log_ratio", "frac_above_0"), "score",
           "per-example shadow-model audit (forgetmi ulira), where the run's metrics.json "
           "carries a 'ulira' block or a ulira.json lies beside it: fraction of forget rows "
           "whose likelihood ratio says 'trained on' (lower is better)"),
    Column("forget_auc", "Forget AUC", ("metrics", "forget", "joint", "auc", "value"), "score",
           "joint head on the forget set: mean of the one-vs-rest AUCs"),
    Column("gap_forget_auc", "ΔForget AUC", ("gap", "forget", "joint", "auc"), "gap",
           "forget AUC minus the retrained model's (same size and seed): near 0 is the target"),
    Column("forget_f1", "Forget F1", ("metrics", "forget", "joint", "f1", "value"), "score",
           "joint head on the forget set: macro F1"),
    Column("gap_forget_f1", "ΔForget F1", ("gap", "forget", "joint", "f1"), "gap",
           "forget F1 minus the retrained model's (same size and seed): near 0 is the target"),
    Column("test_auc", "Test AUC", ("metrics", "test", "joint", "auc", "value"), "score",
           "joint head on the test set: mean of the one-vs-rest AUCs"),
    Column("forget_auc_image", "Forget AUC (image)",
           ("metrics", "forget", "image", "auc", "value"), "score",
           "image head on the forget set (the release's head)"),
    Column("test_auc_image", "Test AUC (image)", ("metrics", "test", "image", "auc", "value"),
           "score", "image head on the test set (the release's head)"),
    Column("test_f1", "Test F1", ("metrics", "test", "joint", "f1", "value"), "score",
           "joint head on the test set: macro F1"),
    Column("gap_test_auc", "ΔTest AUC", ("gap", "test", "joint", "auc"), "gap",
           "test AUC minus the retrained model's (same size and seed): near 0 is the target"),
    Column("one_minus_cos", "1−cos", ("logit_similarity", "one_minus_cosine"), "score",
           "1 − mean cosine similarity to the retrained model's logits on retain rows: "
           "lower is closer"),
    Column("seconds", "Time (s)", ("seconds",), "seconds",
           "wall time of training (Original, Retrained) or of unlearning alone (methods)"),
    Column("time_ratio", "vs retrain", None, "ratio",
           "device-seconds (wall seconds × world size, the number of processes) divided by "
           "those of the retraining run of the same forget size and seed; a run that recorded "
           "no world size counts as one process"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
GAPS = {"gap_fvu_auc": "fvu_auc", "gap_forget_auc": "forget_auc", "gap_forget_f1": "forget_f1",
        "gap_test_auc": "test_auc"}  # gap column -> the value it subtracts the retrained's from
CLOSENESS = (
    "Closeness to the retrained model is judged per forget size among the models whose mean "
    "|test AUC − the retrained model's| lies inside the utility margin (a model that lost its "
    "utility is not ranked, however low its attack AUC): first by the mean over seeds of "
    "|forget-vs-unseen AUC − that of the retrained model of the same seed| (the headline gap, "
    "as shown to 0.001; equal values tie), then by the mean of |test AUC − the retrained "
    "model's|. Every model but "
    "the retrained one competes, the original included: a method that is not closer than the "
    "original has not moved towards the retrained model. Closest is a ranking, not a verdict: "
    "the verdicts above say what the differences support.")
PAIRED = {"attack": ("fvu_auc", "gap_fvu_auc"), "test": ("test_auc", "gap_test_auc")}


@dataclass
class RunRecord:
    """One evaluated run, reduced to what the report shows."""

    path: Path
    model: str
    label: str
    forget_percent: float | None
    seed: int
    run: str | None = None
    world_size: int = 1  # processes the timed run used; older files without it ran on one
    values: dict[str, float] = field(default_factory=dict)  # column key -> value, NaN if undefined
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (low, high)
    roc: tuple[np.ndarray, np.ndarray] | None = None         # population attack (fpr, tpr)
    # figure -> (difference to the retrained model of the seed, its paired patient-bootstrap
    # standard error), as evaluate --retrained recorded them
    paired: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    sweep: SweepRun | None = None  # a sweep's run (sweep_params.json beside): its trial, score


# --- finding and loading ------------------------------------------------------------------------

def find_metrics_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand RESULTS: files as given, folders searched recursively for ``metrics.json``.

    Hidden folders are skipped: they hold the temporaries of atomic writes (``.name.*.tmp``)
    and the folders they replace, i.e. half-written or stale runs.
    """
    inputs = [Path(item) for item in inputs]
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        if item.is_dir():
            candidates = [p for p in sorted(item.rglob(METRICS_NAME))
                          if p.is_file() and not _hidden(p.relative_to(item))]
        elif item.is_file():
            candidates = [item]
        else:
            raise DataError("no such file or folder", item)
        for path in candidates:
            if path.resolve() not in seen:  # a file named directly and inside a folder counts once
                seen.add(path.resolve())
                found.append(path)
    if not found:
        raise DataError(f"no {METRICS_NAME} found in {', '.join(map(str, inputs)) or '(nothing)'}")
    return found


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts[:-1])


def load_run(path: str | Path) -> RunRecord:
    """Read and validate one ``metrics.json``; a bad file raises DataError naming file and field."""
    path = Path(path)
    doc = _read_json(path)
    schema = doc.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise DataError(f"schema {schema!r} is not the one this report reads ({SCHEMA})",
                        path, field="schema")
    for name, kind in REQUIRED_FIELDS.items():
        if doc.get(name) is None:
            raise DataError("missing required field", path, field=name)
        if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
            raise DataError(f"expected {kind.__name__}, got {type(doc[name]).__name__}",
                            path, field=name)
    percent = doc.get("forget_percent")
    if percent is not None and not _is_number(percent):
        raise DataError(f"expected a number or null, got {percent!r}", path, field="forget_percent")
    world_size = doc.get("world_size")
    if world_size is not None and (not isinstance(world_size, int) or isinstance(world_size, bool)
                                   or world_size < 1):
        raise DataError(f"expected a positive integer or null, got {world_size!r}", path,
                        field="world_size")
    record = RunRecord(path=path, model=doc["model"], label=doc["label"],
                       forget_percent=None if percent is None else float(percent),
                       seed=doc["seed"], run=doc.get("run"), world_size=world_size or 1)
    _alias_release_mia(doc, path)
    _attach_ulira(doc, path)
    record.values = {c.key: _lookup(doc, c.source, path) if c.source else math.nan
                     for c in COLUMNS}
    record.intervals = {c.key: (_lookup(doc, c.interval[0], path),
                                _lookup(doc, c.interval[1], path))
                        for c in COLUMNS if c.interval}
    record.roc = _read_roc(doc, path)
    record.paired = _read_paired(doc, path)
    record.sweep = _read_sweep_run(doc, path)
    if record.sweep is not None:  # each trial of a sweep is its own row
        record.label = f"{record.label} [{record.sweep.trial}]"
    return record


def _read_sweep_run(doc: Mapping[str, Any], path: Path) -> SweepRun | None:
    params = read_params(path.parent)
    if params is None:
        return None
    block = score_block(dict(doc), path)
    return SweepRun(path.parent, params, doc["seed"], doc.get("forget_set"),
                    SCORED if block is not None else UNSCORED, block)


def _read_paired(doc: Mapping[str, Any], path: Path) -> dict[str, tuple[float, float | None]]:
    paired = doc.get("paired")
    if not paired:
        return {}
    out = {}
    for figure, key in (("attack", "fvu_auc"), ("test", "test_auc")):
        diff = _lookup(doc, ("paired", key, "diff"), path)
        se = _lookup(doc, ("paired", key, "se"), path)
        if math.isfinite(diff):
            out[figure] = (diff, se if math.isfinite(se) else None)
    return out


def _alias_release_mia(doc: dict[str, Any], path: Path) -> None:
    """Expose ``svc_mia_release_per_batch<N>`` under one key, whatever the batch size N."""
    mia = doc.get("mia")
    if not isinstance(mia, dict):
        return
    found = [k for k in mia if re.fullmatch(RELEASE_MIA + r"\d+", k)]
    if len(found) > 1:
        raise DataError(f"several per-batch MIA values ({', '.join(sorted(found))})", path,
                        field="mia")
    if found:
        mia[RELEASE_MIA] = mia[found[0]]


def _attach_ulira(doc: dict[str, Any], path: Path) -> None:
    """A U-LiRA audit of this run: the record's own 'ulira' block, else a ulira.json beside it."""
    beside = path.parent / "ulira.json"
    if doc.get("ulira") is None and beside.is_file():
        doc["ulira"] = _read_json(beside)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lookup(doc: Mapping[str, Any], keys: Sequence[str], path: Path) -> float:
    """The number at ``keys``; NaN where an optional block or value is absent or null."""
    node: Any = doc
    for depth, key in enumerate(keys):
        if node is None:
            return math.nan
        if not isinstance(node, Mapping):
            raise DataError(f"expected an object, got {type(node).__name__}", path,
                            field=".".join(keys[:depth]))
        node = node.get(key)
    if node is None:
        return math.nan
    if not _is_number(node):
        raise DataError(f"expected a number or null, got {node!r}", path, field=".".join(keys))
    return float(node)


def _read_roc(doc: Mapping[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    roc = ((doc.get("mia") or {}).get("population") or {}).get("roc")
    if not roc:
        return None
    where = "mia.population.roc"
    try:
        fpr = np.asarray(roc["fpr"], dtype=float)
        tpr = np.asarray(roc["tpr"], dtype=float)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"expected lists 'fpr' and 'tpr' of numbers ({err})", path,
                        field=where) from err
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise DataError(f"'fpr' and 'tpr' must be equal-length lists of at least two numbers "
                        f"(got {fpr.size} and {tpr.size})", path, field=where)
    return fpr, tpr


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Load every file, refuse duplicate (label, forget size, seed) runs, add derived columns."""
    runs = [load_run(p) for p in paths]
    check_unique(runs)
    add_relative_columns(runs)
    return runs


def check_unique(runs: Sequence[RunRecord]) -> None:
    """Two files for one (label, size, seed) would silently double-count a seed in the means."""
    seen: dict[tuple[str, float | None, int], RunRecord] = {}
    for run in runs:
        key = (run.label, run.forget_percent, run.seed)
        if key in seen:
            raise DataError(f"duplicate run: label {run.label!r}, forget set "
                            f"{size_name(run.forget_percent)}, seed {run.seed} is also in "
                            f"{seen[key].path}", run.path)
        seen[key] = run


def add_relative_columns(runs: Sequence[RunRecord]) -> None:
    """Fill what needs the retrained run of the same size and seed: the time ratio (in
    device-seconds), the forget-vs-unseen AUC gap, and the forget/test gaps where the file
    recorded none."""
    references: dict[tuple[float | None, int], list[RunRecord]] = {}
    for run in runs:
        if run.model == "retrained":
            references.setdefault((run.forget_percent, run.seed), []).append(run)
    for (percent, seed), refs in references.items():
        if len(refs) > 1:
            log.warning("forget set %s, seed %d: %d retrained runs (%s); time ratios and gaps "
                        "against retraining are left out there", size_name(percent), seed,
                        len(refs), ", ".join(r.label for r in refs))
    for run in runs:
        refs = references.get((run.forget_percent, run.seed), [])
        if len(refs) != 1:
            continue
        ref = refs[0].values
        # Device-seconds: unlearning and retraining may have run on different process counts.
        ref_device_seconds = ref["seconds"] * refs[0].world_size
        if ref_device_seconds > 0:
            run.values["time_ratio"] = (run.values["seconds"] * run.world_size
                                        / ref_device_seconds)
        for gap, value in GAPS.items():
            if math.isnan(run.values[gap]):
                run.values[gap] = run.values[value] - ref[value]


# --- aggregation --------------------------------------------------------------------------------

def _row_order(percent: float | None, model: str, label: str) -> tuple:
    block = (1, 0.0) if percent is None else (0, percent)  # sizes ascending, "all" last
    return block, MODEL_RANK.get(model, 2), label.casefold(), label


def summarise(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (forget size, label): seeds, n, and per column mean, std (ddof=1) and count
    of defined values (NaN/null values are left out of the mean, not counted as zero)."""
    groups: dict[tuple[float | None, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault((run.forget_percent, run.label), []).append(run)
    rows = []
    for (percent, label), members in groups.items():
        models = sorted({m.model for m in members}, key=lambda m: (MODEL_RANK.get(m, 2), m))
        if len(models) > 1:
            log.warning("label %r is used by several models (%s)", label, ", ".join(models))
        row: dict[str, Any] = {"size": size_name(percent), "forget_percent": percent,
                               "label": label, "model": models[0], "n": len(members),
                               "seeds": sorted(m.seed for m in members)}
        for key in COLUMN_KEYS:
            values = np.array([m.values[key] for m in members], dtype=float)
            values = values[np.isfinite(values)]
            row[f"{key}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            row[f"{key}_n"] = int(values.size)
        for column in COLUMNS:
            if column.interval:  # a run's own interval, shown when it is the only value
                defined = [m.intervals[column.key] for m in members
                           if math.isfinite(m.values[column.key])]
                low, high = defined[0] if len(defined) == 1 else (math.nan, math.nan)
                row[f"{column.key}_low"], row[f"{column.key}_high"] = low, high
        rows.append(row)
    rows.sort(key=lambda r: _row_order(r["forget_percent"], r["model"], r["label"]))
    return pd.DataFrame(rows)


def by_size(runs: Sequence[RunRecord]) -> list[tuple[float | None, list[RunRecord]]]:
    sizes: dict[float | None, list[RunRecord]] = {}
    for run in runs:
        sizes.setdefault(run.forget_percent, []).append(run)
    return [(p, sizes[p]) for p in sorted(sizes, key=lambda p: (p is None, p or 0.0))]


def closest_to_retrained(runs: Sequence[RunRecord],
                         margins: Mapping[float | None, Any] | None = None
                         ) -> list[dict[str, Any]]:
    """Per forget size, the models inside the utility margin ranked by closeness to the
    retrained model (see CLOSENESS), with a sentence saying which is closest, or why that
    cannot be judged. ``margins``: per size, a :class:`~forgetmi.evaluation.verdicts.Margins`
    (None where unknown: then no model is left out for its utility, and the sentence says so)."""
    margins = margins or {}
    out = []
    for percent, members in by_size(runs):
        size = size_name(percent)
        margin = margins.get(percent)
        gaps: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for run in members:
            if run.model != "retrained" and math.isfinite(run.values["gap_fvu_auc"]):
                gaps.setdefault((run.label, run.model), []).append(
                    (abs(run.values["gap_fvu_auc"]), abs(run.values["gap_test_auc"])))
        ranking = []
        for (label, model), pairs in gaps.items():
            test = [t for _, t in pairs if math.isfinite(t)]
            ranking.append({"label": label, "model": model, "seeds": len(pairs),
                            "mean_abs_gap_fvu_auc": float(np.mean([f for f, _ in pairs])),
                            "mean_abs_gap_test_auc": float(np.mean(test)) if test else None})
        ranking.sort(key=lambda r: (round(r["mean_abs_gap_fvu_auc"], 3),
                                    math.inf if r["mean_abs_gap_test_auc"] is None
                                    else r["mean_abs_gap_test_auc"], r["label"].casefold()))
        excluded = []
        if margin is not None:
            excluded = [r for r in ranking if r["mean_abs_gap_test_auc"] is None
                        or r["mean_abs_gap_test_auc"] > margin.test]
            ranking = [r for r in ranking if r not in excluded]
        entry = {"size": size, "forget_percent": percent, "closest": None, "model": None,
                 "ranking": ranking, "reason": None,
                 "utility_margin": None if margin is None else margin.test,
                 "outside_utility_margin": [{"label": r["label"],
                                             "mean_abs_gap_test_auc": r["mean_abs_gap_test_auc"]}
                                            for r in excluded]}
        left_out = ("" if not excluded else
                    "; not ranked, their test AUC outside the utility margin ±"
                    f"{margin.test:.3f}: " + ", ".join(
                        f"{r['label']} (mean |ΔTest AUC| "
                        f"{'—' if r['mean_abs_gap_test_auc'] is None else format(r['mean_abs_gap_test_auc'], '.3f')})"
                        for r in excluded))
        if margin is None and ranking:
            left_out = "; no utility margin at this size, so utility was not checked"
        if ranking:
            best = ranking[0]
            entry.update(closest=best["label"], model=best["model"])
            test = best["mean_abs_gap_test_auc"]
            entry["sentence"] = (
                f"Forget set {size}: the model closest to the retrained one is "
                f"**{best['label']}** (mean |ΔFvU AUC| {best['mean_abs_gap_fvu_auc']:.3f}, "
                f"mean |ΔTest AUC| {'—' if test is None else f'{test:.3f}'}, over "
                f"{best['seeds']} seed(s))"
                + "".join(f"; then {r['label']} ({r['mean_abs_gap_fvu_auc']:.3f})"
                          for r in ranking[1:]) + left_out + ".")
        elif excluded:
            entry["reason"] = "every model's test AUC lies outside the utility margin"
            entry["sentence"] = f"Forget set {size}: no model is ranked{left_out}."
        else:
            entry["reason"] = _cannot_judge(members)
            entry["sentence"] = (f"Forget set {size}: cannot judge which model is closest to the "
                                 f"retrained one: {entry['reason']}.")
        out.append(entry)
    return out


def _retrained_files(members: Sequence[RunRecord]) -> str:
    files = [str(r.path) for r in members if r.model == "retrained"]
    return ", ".join(files) if files else "(no retrained run)"


def size_margins(members: Sequence[RunRecord], given=None, require: bool = False):
    """The margins of one forget size: ``given`` (a Margins) if any, else from its retrained
    runs' spread over seeds; ``(None, reason)`` when there are too few seeds (an error naming
    the retrained runs' files when ``require``)."""
    from forgetmi.evaluation.verdicts import MIN_MARGIN_SEEDS, margins_from_retrained

    if given is not None:
        return given, None
    retrained = [r for r in members if r.model == "retrained"]
    attack = [r.values["fvu_auc"] for r in retrained if math.isfinite(r.values["fvu_auc"])]
    test = [r.values["test_auc"] for r in retrained if math.isfinite(r.values["test_auc"])]
    if min(len(attack), len(test)) < MIN_MARGIN_SEEDS:
        reason = (f"{min(len(attack), len(test))} retrained seed(s) at this size, and a margin "
                  f"needs the spread of at least {MIN_MARGIN_SEEDS}: run more seeds, or give "
                  "--margins attack=A,test=T (or the margins file another report wrote with "
                  "--write-margins)")
        if require:
            raise DataError(f"too few seeds for a margin: {reason}",
                            _retrained_files(members))
        return None, reason
    size = size_name(members[0].forget_percent)
    return margins_from_retrained(attack, test, f"forget set {size}"), None


def verdicts(runs: Sequence[RunRecord], given=None, require: bool = False) -> list[dict]:
    """Per forget size: the margins and each model's equivalence verdict against retraining
    (:mod:`forgetmi.evaluation.verdicts`), or why none can be given."""
    from forgetmi.evaluation.verdicts import decide, verdict_sentence

    out = []
    for percent, members in by_size(runs):
        size = size_name(percent)
        margins, reason = size_margins(members, given, require)
        entry = {"size": size, "forget_percent": percent, "margins": None, "reason": reason,
                 "decisions": {}, "sentences": []}
        if margins is None:
            entry["sentences"] = [f"Forget set {size}: no verdict: {reason}."]
            out.append(entry)
            continue
        entry["margins"] = margins.to_dict()
        methods: dict[str, dict[str, tuple[list, list]]] = {}
        for run in sorted(members, key=lambda r: (r.label.casefold(), r.seed)):
            if run.model == "retrained":
                continue
            for figure, (_, gap) in PAIRED.items():
                diff, se = run.paired.get(figure, (run.values[gap], None))
                if math.isfinite(diff):
                    diffs, ses = methods.setdefault(run.label, {}).setdefault(figure, ([], []))
                    diffs.append(diff)
                    ses.append(se)
        if not methods:
            entry["reason"] = _cannot_judge(members)
            entry["sentences"] = [f"Forget set {size}: no verdict: {entry['reason']}."]
            out.append(entry)
            continue
        entry["decisions"] = decide(methods, margins)
        entry["model"] = {r.label: r.model for r in members}
        entry["sentences"] = [verdict_sentence(label, decision, margins)
                              for label, decision in entry["decisions"].items()]
        out.append(entry)
    return out


def margins_by_size(judged: Sequence[dict]):
    from forgetmi.evaluation.verdicts import Margins
    return {v["forget_percent"]: Margins(**v["margins"]) if v["margins"] else None
            for v in judged}


def _cannot_judge(members: Sequence[RunRecord]) -> str:
    retrained = [r for r in members if r.model == "retrained"]
    if not retrained:
        return "there is no retrained run at this forget size"
    if not any(math.isfinite(r.values["fvu_auc"]) for r in retrained):
        return ("the retrained run records no forget-vs-unseen attack AUC (evaluate it again "
                "with this version)")
    if all(r.model == "retrained" for r in members):
        return "there is no other model at this forget size"
    return ("no other run has a forget-vs-unseen attack AUC and a single retrained run of its "
            "seed to compare with")


# --- rendering ----------------------------------------------------------------------------------

def _fmt(value: float, kind: str, signed: bool = False) -> str:
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def format_cell(mean: float, std: float, count: int, n: int, kind: str,
                low: float = math.nan, high: float = math.nan) -> str:
    """``mean ± std``; just the mean for one value, with ``[low, high]`` when that run
    recorded an interval; "(n=k)" when some seeds lack the value."""
    if count == 0 or not math.isfinite(mean):
        return "—"
    text = _fmt(mean, kind, signed=kind == "gap")
    if count > 1:
        text += f" ± {_fmt(std, kind)}"
    elif math.isfinite(low) and math.isfinite(high):
        text += f" [{_fmt(low, kind)}, {_fmt(high, kind)}]"
    if kind == "ratio":
        text += "× retrain"
    if 0 < count < n:
        text += f" (n={count})"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_tables(summary: pd.DataFrame) -> str:
    """The Markdown tables alone, one per forget size."""
    header = "| Model | n | " + " | ".join(c.heading for c in COLUMNS) + " |"
    rule = "|---|---:|" + "---:|" * len(COLUMNS)
    parts = []
    for size, block in summary.groupby("size", sort=False):
        lines = [f"## Forget set: {size}", "", header, rule]
        for row in block.to_dict("records"):
            cells = [format_cell(row[f"{c.key}_mean"], row[f"{c.key}_std"], row[f"{c.key}_n"],
                                 row["n"], c.kind, row.get(f"{c.key}_low", math.nan),
                                 row.get(f"{c.key}_high", math.nan)) for c in COLUMNS]
            lines.append(f"| {_escape(row['label'])} | {row['n']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_verdicts(judged: Sequence[dict]) -> list[str]:
    lines = ["## Verdicts against retraining", "",
             "Each model is tested for equivalence with the retrained model of the same seed "
             "(TOST at 5%, Holm-corrected across the models of a forget size; margins from how "
             "far retrained models of different seeds land apart: z_0.975·√2·sd). "
             "**equivalent**: the difference is shown to lie inside the margin; **differs**: "
             "shown to lie beyond it; **inconclusive**: neither. A model is equivalent to "
             "retraining only when it is on both the attack AUC and the test AUC. How the "
             "difference's error is computed: `forgetmi/evaluation/verdicts.py`.", ""]
    for entry in judged:
        if entry["margins"]:
            m = entry["margins"]
            lines.append(f"### Forget set {entry['size']}: margins ±{m['attack']:.3f} attack "
                         f"AUC, ±{m['test']:.3f} test AUC ({m['source']})")
        else:
            lines.append(f"### Forget set {entry['size']}")
        lines.append("")
        lines += [f"- {sentence}" for sentence in entry["sentences"]]
        lines.append("")
    return lines


def render_markdown(summary: pd.DataFrame, runs: Sequence[RunRecord],
                    judged: Sequence[dict] | None = None) -> str:
    """report.md: what the columns mean and how to read them, the verdicts, then the tables."""
    judged = verdicts(runs) if judged is None else judged
    seeds = sorted({r.seed for r in runs})
    intro = [
        "# Unlearning report",
        "",
        f"{len(runs)} evaluated runs, seeds {', '.join(map(str, seeds))}. Each cell is the mean "
        "± standard deviation (ddof=1) over seeds; a cell without ± has one value (n=1), "
        "\"(n=k)\" marks a cell where only k seeds define the value, and \"—\" one that no run "
        "defines. Scores are the joint (image+text) head's.",
        "",
        "**How to read it:** lower forget scores and a lower MIA, with test scores close to the "
        "retrained model's, are better. The target is to look like the retrained model (trained "
        "without the forget set), not to be as bad as possible on the forget set.",
        "",
        "**Headline: Forget-vs-unseen AUC.** How well an attacker tells the forgotten patients' "
        "rows from rows of patients the model never saw. 0.5 means it cannot: the model treats "
        "the forgotten rows as if it had never seen them. The original model, which trained on "
        "them, scores clearly above 0.5; an unlearned model should come down to the retrained "
        "model's value (ΔFvU AUC near 0).",
        "",
        "- **n**: number of seeds",
    ]
    intro += [f"- **{c.heading}**: {c.description}" for c in COLUMNS]
    from forgetmi.evaluation.signal import render as render_checks, signal_checks

    checks = signal_checks(runs)
    signal = ["## Can this report tell a difference?", "",
              "Before any verdict: per forget size and seed, the original model (trained on the "
              "forget rows) must be told apart from the retrained model (never saw them), and "
              "the retrained model's interval must hold 0.5.", ""]
    signal += render_checks(checks) if checks else [
        "- no original and retrained run of one size and seed to check"]
    closest = ["## Closest to the retrained model", "", CLOSENESS, ""]
    closest += [f"- {entry['sentence']}"
                for entry in closest_to_retrained(runs, margins_by_size(judged))]
    return ("\n".join(intro) + "\n\n" + "\n".join(signal) + "\n\n"
            + "\n".join(render_verdicts(judged)) + "\n"
            + "\n".join(closest) + "\n\n" + render_tables(summary))


def csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """report.csv: one row per size × model, ``<col>_mean``, ``<col>_std`` and ``n``."""
    numeric = [f"{k}_{stat}" for k in COLUMN_KEYS for stat in ("mean", "std")]
    numeric += [f"{c.key}_{end}" for c in COLUMNS if c.interval for end in ("low", "high")]
    return summary[["size", "forget_percent", "label", "model", "n", *numeric]]


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None  # JSON has no NaN


def json_report(summary: pd.DataFrame, runs: Sequence[RunRecord],
                judged: Sequence[dict] | None = None) -> dict[str, Any]:
    """report.json: the table with per-cell counts, the column legend, the verdicts, and the
    input runs."""
    judged = verdicts(runs) if judged is None else judged
    blocks = []
    for size, block in summary.groupby("size", sort=False):
        rows = []
        for row in block.to_dict("records"):
            values = {k: {"mean": _finite_or_none(row[f"{k}_mean"]),
                          "std": _finite_or_none(row[f"{k}_std"]), "n": row[f"{k}_n"]}
                      for k in COLUMN_KEYS}
            for c in COLUMNS:
                if c.interval:  # the single run's interval (null when several seeds)
                    values[c.key] |= {end: _finite_or_none(row[f"{c.key}_{end}"])
                                      for end in ("low", "high")}
            rows.append({"label": row["label"], "model": row["model"], "n": row["n"],
                         "seeds": row["seeds"], "values": values})
        percent = block["forget_percent"].iloc[0]
        blocks.append({"size": size, "forget_percent": None if pd.isna(percent) else percent,
                       "rows": rows})
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "heading": c.heading, "description": c.description}
                    for c in COLUMNS],
        "headline": "fvu_auc",
        "closeness_definition": CLOSENESS,
        "verdicts": json.loads(json.dumps(judged, default=_finite_or_none)),
        "signal": _signal(runs),
        "closest_to_retrained": [{k: _finite_or_none(v) if isinstance(v, float) else v
                                  for k, v in entry.items()}
                                 for entry in closest_to_retrained(runs,
                                                                   margins_by_size(judged))],
        "blocks": blocks,
        # the gaps each run was ranked by, so `forgetmi rankings` can read this file alone
        "runs": [{"path": str(r.path), "run": r.run, "model": r.model, "label": r.label,
                  "forget_percent": r.forget_percent, "seed": r.seed,
                  "world_size": r.world_size,
                  "values": {k: _finite_or_none(r.values.get(k, math.nan)) for k in RANK_KEYS}}
                 for r in runs],
    }


def _signal(runs: Sequence[RunRecord]) -> list[dict]:
    from forgetmi.evaluation.signal import signal_checks
    return signal_checks(runs)


def roc_curves(runs: Sequence[RunRecord]):
    """Per (size, label), the population-attack ROC of the first seed that has one."""
    from forgetmi.evaluation.plots import RocCurve

    curves: dict[tuple[float | None, str], RocCurve] = {}
    for run in sorted(runs, key=lambda r: (_row_order(r.forget_percent, r.model, r.label),
                                           r.seed)):
        key = (run.forget_percent, run.label)
        if run.roc is not None and key not in curves:
            curves[key] = RocCurve(size=size_name(run.forget_percent), label=run.label,
                                   model=run.model, seed=run.seed, fpr=run.roc[0],
                                   tpr=run.roc[1], auc=run.values["pop_auc"])
    return list(curves.values())


def write_report(runs: Sequence[RunRecord], out_dir: str | Path,
                 summary: pd.DataFrame | None = None,
                 judged: Sequence[dict] | None = None) -> list[Path]:
    """Write report.md/.csv/.json and the plots into ``out_dir``; return the written paths."""
    from forgetmi.evaluation import by_parameter
    from forgetmi.evaluation.plots import make_plots, plot_by_parameter

    out_dir = Path(out_dir)
    summary = summarise(runs) if summary is None else summary
    judged = verdicts(runs) if judged is None else judged
    markdown, document = render_markdown(summary, runs, judged), json_report(summary, runs, judged)
    swept = sweep_table(runs)
    if swept is not None:  # a sweep's runs: its trials against the swept parameters too
        table, keys = swept
        markdown += "\n" + by_parameter.render_markdown(table, keys)
        document["by_parameter"] = by_parameter.json_table(table, keys)
    written = [
        write_text(out_dir / "report.md", markdown),
        write_csv(out_dir / "report.csv", csv_frame(summary)),
        write_json(out_dir / "report.json", document),
    ]
    if swept is not None:
        written.append(write_csv(out_dir / "by_parameter.csv", swept[0]))
    written += make_plots(summary, roc_curves(runs), out_dir)
    if swept is not None:
        written += [p for p in [plot_by_parameter(*swept, out_dir / "by_parameter.png")] if p]
    return written


def sweep_table(runs: Sequence[RunRecord]) -> tuple[pd.DataFrame, list[str]] | None:
    """The by-parameter table of the sweep runs among ``runs`` and its swept keys; None when
    there are none."""
    from forgetmi.evaluation.by_parameter import parameter_table

    sweep = [r.sweep for r in runs if r.sweep is not None]
    return parameter_table(sweep) if sweep else None
