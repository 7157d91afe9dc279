"""Sweep runs read back from their folders, grouped into trials.

A sweep run is a folder holding ``sweep_params.json`` (the parameters its sweep gave it). Its
*trial* is that setting of the parameters minus the place keys, the ones that only say which
replicate it is (seed, forget set) or where it ran: one trial, run on several seeds and forget
sizes, is one choice a selection can make. The trial id is a hash of the trial's settings, so
the same settings name the same trial whatever folder layout the sweep used (one sweep folder
per seed, or one folder holding every seed). A run is *scored* when its ``metrics.json`` has a
score block (:mod:`forgetmi.evaluation.score`), or a ``paired`` block to compute one from.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from forgetmi.errors import DataError

PARAMS_NAME = "sweep_params.json"
# Sweep parameters that say which replicate a run is or where it ran, not how it unlearned.
PLACE_KEYS = frozenset({"seed", "forget_set", "config", "original", "checkpoint_every",
                        "log_every", "output_dir", "wandb", "project", "entity",
                        "evaluate.retrained", "evaluate.references", "evaluate.bootstrap"})


def is_place(key: str) -> bool:
    """Keys that say where a run ran, what scored it or where it logged: not its settings (a
    preset carrying evaluate.retrained would point every later run at the tuning references)."""
    return key in PLACE_KEYS or key.startswith(("tracking.", "evaluate.", "data.root"))
# A run's state, from its folder: what a selection may use and what it must list.
SCORED, UNSCORED, UNEVALUATED, FAILED = ("scored", "not scored (evaluated without --retrained)",
                                         "not evaluated", "failed or unfinished")

Replicate = tuple[int | None, str | None]   # (seed, forget-set file name)


def settings_of(params: dict[str, Any]) -> dict[str, Any]:
    """The trial's settings: the sweep parameters minus the place keys."""
    return {k: v for k, v in params.items() if not is_place(k)}


def trial_id(settings: dict[str, Any]) -> str:
    """Eight hex digits naming a trial; the same settings always give the same id."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _percent(forget_set: str | None) -> float | None:
    match = re.search(r"(\d+(?:\.\d+)?)\s*per", forget_set or "")
    return float(match.group(1)) if match else None


def replicate_name(replicate: Replicate) -> str:
    """``s3/10%`` (seed and forget size), ``?`` where the seed is unknown."""
    seed, forget_set = replicate
    percent = _percent(forget_set)
    size = f"{percent:g}%" if percent is not None else (forget_set or "all")
    return f"s{'?' if seed is None else seed}/{size}"


def replicate_order(replicate: Replicate) -> tuple:
    """Seeds ascending, then forget sizes by percentage (named sets after, by name)."""
    seed, forget_set = replicate
    percent = _percent(forget_set)
    return (seed is None, seed or 0, percent is None, percent or 0.0, forget_set or "")


@dataclass
class SweepRun:
    """One sweep run folder, reduced to what a selection or a report needs."""

    path: Path
    params: dict[str, Any]
    seed: int | None
    forget_set: str | None
    state: str
    score: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return settings_of(self.params)

    @property
    def trial(self) -> str:
        return trial_id(self.settings)

    @property
    def replicate(self) -> Replicate:
        return self.seed, self.forget_set


@dataclass
class Trial:
    """Every run of one setting of a sweep's parameters."""

    id: str
    settings: dict[str, Any]
    runs: list[SweepRun] = field(default_factory=list)

    def scored(self) -> dict[Replicate, SweepRun]:
        return {r.replicate: r for r in self.runs if r.state == SCORED}

    def mean(self, key: str) -> float:
        """The mean over the scored replicates of a score-block figure; NaN where none has it."""
        values = [r.score.get(key) for r in self.scored().values()]
        values = [float(v) for v in values if v is not None and math.isfinite(v)]
        return statistics.fmean(values) if values else math.nan

    def incomplete(self) -> list[SweepRun]:
        """Runs that failed, or finished without a score."""
        return [r for r in self.runs if r.state != SCORED]


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read: {err}", path) from None
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON ({err.msg}, column {err.colno})", path,
                        row=err.lineno) from None
    if not isinstance(doc, dict):
        raise DataError(f"expected a JSON object, got {type(doc).__name__}", path)
    return doc


def read_params(folder: Path) -> dict[str, Any] | None:
    """The run's ``sweep_params.json``; None for a folder that is not a sweep run."""
    path = folder / PARAMS_NAME
    return read_json(path) if path.is_file() else None


def score_block(doc: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The run's score: its own block, else computed from its ``paired`` block (files written
    before evaluate recorded one; their time ratio is unknown)."""
    from forgetmi.evaluation.score import score

    block = doc.get("score")
    if block is None:
        return score(doc.get("paired"))
    if not isinstance(block, dict) or not isinstance(block.get("value"), (int, float)):
        raise DataError("expected an object with a number 'value'", path, field="score")
    return block


def _configured(folder: Path) -> tuple[int | None, str | None]:
    """Seed and forget set from the run's ``config.yaml``, for a run that left no metrics."""
    path = folder / "config.yaml"
    if not path.is_file():
        return None, None
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read: {err}", path) from None
    forget_set = (cfg.get("data") or {}).get("forget_set") if isinstance(cfg, dict) else None
    seed = cfg.get("seed") if isinstance(cfg, dict) else None
    return seed if isinstance(seed, int) else None, forget_set


def read_run(folder: Path, params: dict[str, Any]) -> SweepRun:
    """A sweep run's state, replicate and score from the files in its folder."""
    metrics, timing = folder / "metrics.json", folder / "timing.json"
    seed, forget_set = params.get("seed"), params.get("forget_set")
    if metrics.is_file():
        doc = read_json(metrics)
        seed = doc.get("seed", seed)
        forget_set = doc.get("forget_set", forget_set)
        block = score_block(doc, metrics)
        state, score = (SCORED, block) if block is not None else (UNSCORED, None)
    else:
        state, score = (UNEVALUATED if timing.is_file() else FAILED), None
        if seed is None or forget_set is None:
            configured = _configured(folder)
            seed = configured[0] if seed is None else seed
            forget_set = configured[1] if forget_set is None else forget_set
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise DataError(f"expected an integer seed, got {seed!r}", folder, field="seed")
    return SweepRun(folder, params, seed, None if forget_set is None else Path(forget_set).name,
                    state, score)


def find_runs(sweep: Path) -> list[SweepRun]:
    """Every sweep run under ``sweep``, at any depth (hidden folders, the temporaries of
    atomic writes, skipped)."""
    if not sweep.is_dir():
        raise DataError("no such folder", sweep)
    runs = []
    for path in sorted(sweep.rglob(PARAMS_NAME)):
        if any(part.startswith(".") for part in path.relative_to(sweep).parts[:-1]):
            continue
        runs.append(read_run(path.parent, read_json(path)))
    return runs


def group(runs: Iterable[SweepRun]) -> dict[str, Trial]:
    """Runs by trial; two runs of one trial and replicate are refused (a seed counted twice)."""
    trials: dict[str, Trial] = {}
    seen: dict[tuple[str, Replicate], Path] = {}
    for run in runs:
        trial = trials.setdefault(run.trial, Trial(run.trial, run.settings))
        if run.seed is not None:
            key = (run.trial, run.replicate)
            if key in seen:
                raise DataError(f"duplicate run: trial {run.trial}, {replicate_name(run.replicate)}"
                                f" is also in {seen[key]}", run.path)
            seen[key] = run.path
        trial.runs.append(run)
    return trials


def swept_keys(settings: Iterable[dict[str, Any]]) -> list[str]:
    """The keys whose value differs between trials (absent counts as a value), in first-seen
    order."""
    settings = list(settings)
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys
            if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1]


def format_value(value: Any) -> str:
    """A setting for a table: floats to 4 significant digits (a bayes sweep's draws carry 17),
    the rest as written."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_settings(settings: dict[str, Any], keys: Iterable[str] | None = None) -> str:
    keys = sorted(settings) if keys is None else keys
    return ", ".join(f"{k}={format_value(settings.get(k))}" for k in keys)
