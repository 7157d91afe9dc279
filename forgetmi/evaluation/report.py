"""Aggregate evaluated runs into the paper-style table and plots: ``forgetmi report``.

Reads the ``metrics.json`` that ``forgetmi evaluate`` writes for every run, groups the runs by
forget size and model label, and reports mean ± std over seeds: single-seed retrains are noisy
(SPEC §6), so a method is only judged against the retrained model over several seeds. Writes
``report.md``, ``report.csv``, ``report.json`` and PNG plots, each atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from forgetmi.errors import DataError, ForgetMIError
from forgetmi.utils.atomic import write_csv, write_json, write_text

log = logging.getLogger("forgetmi.report")

SCHEMA = 1
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


COLUMNS: tuple[Column, ...] = (
    Column("mia", "MIA", ("mia", "svc_mia_per_sample"), "score",
           "the paper's SVC attack on per-sample losses: fraction of forget rows called member"),
    Column("mia_batch", "MIA rel./batch", ("mia", RELEASE_MIA), "score",
           "the same attack on per-batch mean losses (batches of 32 in the release), as the "
           "release computed it: compare this one with the paper's numbers"),
    Column("pop_auc", "Pop. AUC", ("mia", "population", "auc"), "score",
           "population attack on several per-sample signals: ROC AUC (0.5 = chance)"),
    Column("pop_tpr_1pct", "TPR@1%FPR", ("mia", "population", "tpr_at_1pct_fpr"), "score",
           "population attack: true-positive rate at 1% false-positive rate"),
    Column("forget_auc", "Forget AUC", ("metrics", "forget", "joint", "auc", "value"), "score",
           "joint head on the forget set: mean of the one-vs-rest AUCs"),
    Column("forget_f1", "Forget F1", ("metrics", "forget", "joint", "f1", "value"), "score",
           "joint head on the forget set: macro F1"),
    Column("test_auc", "Test AUC", ("metrics", "test", "joint", "auc", "value"), "score",
           "joint head on the test set: mean of the one-vs-rest AUCs"),
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
           "time divided by the retraining time of the same forget size and seed"),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


@dataclass
class RunRecord:
    """One evaluated run, reduced to what the report shows."""

    path: Path
    model: str
    label: str
    forget_percent: float | None
    seed: int
    run: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # column key -> value, NaN if undefined
    roc: tuple[np.ndarray, np.ndarray] | None = None         # population attack (fpr, tpr)


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
    record = RunRecord(path=path, model=doc["model"], label=doc["label"],
                       forget_percent=None if percent is None else float(percent),
                       seed=doc["seed"], run=doc.get("run"))
    _alias_release_mia(doc, path)
    record.values = {c.key: _lookup(doc, c.source, path) if c.source else math.nan
                     for c in COLUMNS}
    record.roc = _read_roc(doc, path)
    return record


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read: {err}", path) from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg}, column {err.colno})", path,
                        row=err.lineno) from err
    if not isinstance(doc, dict):
        raise DataError(f"expected a JSON object, got {type(doc).__name__}", path)
    return doc


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
    """Fill what needs the retrained run of the same size and seed: the time ratio, and the
    test-AUC gap where the file recorded none."""
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
        if ref["seconds"] > 0:
            run.values["time_ratio"] = run.values["seconds"] / ref["seconds"]
        if math.isnan(run.values["gap_test_auc"]):
            run.values["gap_test_auc"] = run.values["test_auc"] - ref["test_auc"]


# --- aggregation --------------------------------------------------------------------------------

def size_name(percent: float | None) -> str:
    return "all" if percent is None else f"{percent:g}%"


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
        rows.append(row)
    rows.sort(key=lambda r: _row_order(r["forget_percent"], r["model"], r["label"]))
    return pd.DataFrame(rows)


# --- rendering ----------------------------------------------------------------------------------

def _fmt(value: float, kind: str, signed: bool = False) -> str:
    if kind == "seconds":
        return f"{value:.1f}"
    if kind == "ratio":
        return f"{value:.2f}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def format_cell(mean: float, std: float, count: int, n: int, kind: str) -> str:
    """``mean ± std``; just the mean for one value; "(n=k)" when some seeds lack the value."""
    if count == 0 or not math.isfinite(mean):
        return "—"
    text = _fmt(mean, kind, signed=kind == "gap")
    if count > 1:
        text += f" ± {_fmt(std, kind)}"
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
                                 row["n"], c.kind) for c in COLUMNS]
            lines.append(f"| {_escape(row['label'])} | {row['n']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def render_markdown(summary: pd.DataFrame, runs: Sequence[RunRecord]) -> str:
    """report.md: what the columns mean and how to read them, then the tables."""
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
        "- **n**: number of seeds",
    ]
    intro += [f"- **{c.heading}**: {c.description}" for c in COLUMNS]
    return "\n".join(intro) + "\n\n" + render_tables(summary)


def csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """report.csv: one row per size × model, ``<col>_mean``, ``<col>_std`` and ``n``."""
    numeric = [f"{k}_{stat}" for k in COLUMN_KEYS for stat in ("mean", "std")]
    return summary[["size", "forget_percent", "label", "model", "n", *numeric]]


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None  # JSON has no NaN


def json_report(summary: pd.DataFrame, runs: Sequence[RunRecord]) -> dict[str, Any]:
    """report.json: the table with per-cell counts, the column legend, and the input runs."""
    blocks = []
    for size, block in summary.groupby("size", sort=False):
        rows = []
        for row in block.to_dict("records"):
            values = {k: {"mean": _finite_or_none(row[f"{k}_mean"]),
                          "std": _finite_or_none(row[f"{k}_std"]), "n": row[f"{k}_n"]}
                      for k in COLUMN_KEYS}
            rows.append({"label": row["label"], "model": row["model"], "n": row["n"],
                         "seeds": row["seeds"], "values": values})
        percent = block["forget_percent"].iloc[0]
        blocks.append({"size": size, "forget_percent": None if pd.isna(percent) else percent,
                       "rows": rows})
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "heading": c.heading, "description": c.description}
                    for c in COLUMNS],
        "blocks": blocks,
        "runs": [{"path": str(r.path), "run": r.run, "model": r.model, "label": r.label,
                  "forget_percent": r.forget_percent, "seed": r.seed} for r in runs],
    }


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
                 summary: pd.DataFrame | None = None) -> list[Path]:
    """Write report.md/.csv/.json and the plots into ``out_dir``; return the written paths."""
    from forgetmi.evaluation.plots import make_plots

    out_dir = Path(out_dir)
    summary = summarise(runs) if summary is None else summary
    written = [
        write_text(out_dir / "report.md", render_markdown(summary, runs)),
        write_csv(out_dir / "report.csv", csv_frame(summary)),
        write_json(out_dir / "report.json", json_report(summary, runs)),
    ]
    written += make_plots(summary, roc_curves(runs), out_dir)
    return written


# --- command ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi report",
        description="Aggregate evaluated runs (metrics.json) into tables and plots: mean ± std "
                    "over seeds per forget size and model.")
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="metrics.json files, or folders searched recursively for them")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``forgetmi report RESULTS... [--out DIR]``: 0 on success, 2 on bad input."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors and --help: return the code, as for bad input
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    if not logging.getLogger("forgetmi").handlers:  # called on its own, not from the CLI
        from forgetmi.utils.logs import setup_logging
        setup_logging(0)
    try:
        runs = load_runs(find_metrics_files(args.results))
        summary = summarise(runs)
        written = write_report(runs, args.out, summary)
    except ForgetMIError as err:
        log.error("%s", err)
        return 2
    log.info("%d runs\n\n%s", len(runs), render_tables(summary))
    for path in written:
        log.info("wrote %s", path)
    return 0
