"""Each method's settings from its sweep: the eligible trial closest to the retrained model.

    a trial's score = mean over its replicates (seed × forget size) of the run's score
                      (|attack AUC − retrained's| + |test AUC − retrained's|, paired)

A trial is eligible when it was scored on every replicate its sweep ran anywhere (the seeds
seen × the forget sizes seen), no run of it failed, and its unlearning took on average at most
``budget`` of the retraining's time (device-seconds). Of the eligible trials the lowest mean
score wins, ties by trial id. The winner's settings become one entry of a presets file, the
``methods`` a protocol takes (``configs/presets/tuned.yaml``).
"""

from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from forgetmi.errors import DataError
from forgetmi.evaluation.score import DEFINITION
from forgetmi.evaluation.trials import (FAILED, SCORED, UNEVALUATED, Replicate, SweepRun, Trial,
                                        find_runs, format_settings, group, replicate_name,
                                        replicate_order, swept_keys)

RULE = ("of the trials of its sweep scored on every replicate (seed × forget size), with no "
        "failed run and {limit}, the one of lowest mean score")


@dataclass
class Selection:
    """One method's trials from one sweep folder, and the one chosen (None: none eligible)."""

    name: str                 # the preset's name
    method: str
    sweep: Path
    trials: dict[str, Trial]
    replicates: list[Replicate]
    budget: float
    reasons: dict[str, str] = field(default_factory=dict)   # trial id -> why not eligible
    chosen: str | None = None

    def ranked(self) -> list[Trial]:
        """Eligible first, then by mean score (unscored last), then by id."""
        def key(trial: Trial):
            score = trial.mean("value")
            return bool(self.reasons[trial.id]), math.isnan(score), score, trial.id
        return sorted(self.trials.values(), key=key)

    def preset(self) -> dict[str, Any]:
        """The chosen trial's settings as a presets entry: ``method`` first."""
        settings = self.trials[self.chosen].settings
        return {"method": self.method,
                **{k: settings[k] for k in sorted(settings) if k != "method"}}


def why_not(trial: Trial, replicates: Sequence[Replicate], budget: float) -> str:
    """Why ``trial`` is not eligible, or "" when it is."""
    def where(run: SweepRun) -> str:  # a run that died before saying its seed: its folder
        return replicate_name(run.replicate) if run.seed is not None else str(run.path)

    reasons = []
    for state in (FAILED, UNEVALUATED):
        places = [where(r) for r in trial.runs if r.state == state]
        if places:
            reasons.append(f"{state} on {', '.join(places)}")
    unscored = [where(r) for r in trial.runs if r.state not in (SCORED, FAILED, UNEVALUATED)]
    if unscored:
        reasons.append(f"not scored on {', '.join(unscored)} (evaluate with --retrained)")
    ran = {run.replicate for run in trial.runs}
    missing = [replicate_name(r) for r in replicates if r not in ran]
    if missing:
        reasons.append(f"no run on {', '.join(missing)}")
    ratios = [r.score.get("time_ratio") for r in trial.scored().values()]
    if math.isfinite(budget) and ratios:
        if any(ratio is None for ratio in ratios):
            reasons.append("time ratio unknown (a run evaluated without its retrained run's "
                           "timing)")
        elif trial.mean("time_ratio") > budget:
            reasons.append(f"over budget ({trial.mean('time_ratio'):.3f} > {budget:.3f})")
    return "; ".join(reasons)


def _method(run: SweepRun) -> str | None:
    """The run's method: its sweep parameter, else its config.yaml's ``unlearn.method``."""
    if run.params.get("method") is not None:
        return str(run.params["method"])
    config = run.path / "config.yaml"
    if config.is_file():
        try:
            cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DataError(f"cannot read: {err}", config) from None
        method = (cfg.get("unlearn") or {}).get("method") if isinstance(cfg, dict) else None
        return None if method is None else str(method)
    return None


def select_sweep(sweep: str | Path, budget: float, name: str | None = None) -> list[Selection]:
    """One selection per method of the sweep folder ``sweep`` (``name`` names a sweep of one
    method's preset)."""
    sweep = Path(sweep)
    runs = find_runs(sweep)
    if not runs:
        raise DataError("no sweep runs (folders with sweep_params.json) found", sweep)
    known = [r.replicate for r in runs if r.seed is not None]
    # Every seed seen × every forget size seen: a trial must have run on them all.
    replicates = sorted(itertools.product({s for s, _ in known}, {f for _, f in known}),
                        key=replicate_order)
    by_method: dict[str, list[SweepRun]] = {}
    for run in runs:
        method = _method(run)
        if method is None:
            raise DataError("no 'method' parameter and no config.yaml saying which method ran",
                            run.path / "sweep_params.json")
        by_method.setdefault(method, []).append(run)
    if name is not None and len(by_method) > 1:
        raise DataError(f"holds several methods ({', '.join(sorted(by_method))}); --name names "
                        "the preset of a sweep of one method", sweep)
    selections = []
    for method, members in sorted(by_method.items()):
        trials = group(members)
        selection = Selection(name or method, method, sweep, trials, replicates, budget)
        selection.reasons = {t.id: why_not(t, replicates, budget) for t in trials.values()}
        eligible = [t for t in trials.values() if not selection.reasons[t.id]]
        best = min(eligible, key=lambda t: (t.mean("value"), t.id), default=None)
        selection.chosen = None if best is None else best.id
        selections.append(selection)
    return selections


def select(sweeps: Sequence[str | Path], budget: float,
           names: Sequence[str] | None = None) -> list[Selection]:
    """The selections of every sweep folder, one per preset name; two sweeps giving one name
    (two sweeps of one method, say) are refused."""
    if names and len(names) != len(sweeps):
        raise DataError(f"--name given {len(names)} time(s) for {len(sweeps)} sweep folder(s): "
                        "give one name per sweep folder, in their order, or none")
    selections: dict[str, Selection] = {}
    for index, sweep in enumerate(sweeps):
        for selection in select_sweep(sweep, budget, names[index] if names else None):
            if selection.name in selections:
                raise DataError(f"preset {selection.name!r} also comes from "
                                f"{selections[selection.name].sweep}: name each sweep's preset "
                                "with --name", sweep)
            selections[selection.name] = selection
    return [selections[name] for name in sorted(selections)]


def _number(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def render(selection: Selection) -> str:
    """The selection's table (Markdown): every trial, its score per replicate, the mean score
    and time ratio, and the chosen one marked (or why each other is not eligible)."""
    trials = selection.ranked()
    keys = swept_keys(t.settings for t in trials) or sorted(
        k for k in trials[0].settings if k != "method")
    names = [replicate_name(r) for r in selection.replicates]
    lines = [f"## {selection.name} ({selection.sweep}): {len(trials)} trial(s), replicates "
             f"{', '.join(names) or '—'}", "",
             "| | trial | " + " | ".join(["settings", *names, "mean score", "time ratio"]) + " |",
             "|---|---|---|" + "---:|" * (len(names) + 2)]
    for trial in trials:
        scored = trial.scored()
        mark = ("**chosen**" if trial.id == selection.chosen
                else selection.reasons[trial.id] or "eligible")
        per_replicate = [_number(scored[r].score["value"]) if r in scored else "—"
                         for r in selection.replicates]
        lines.append("| " + " | ".join([mark.replace("|", "\\|"), trial.id,
                                         format_settings(trial.settings, keys), *per_replicate,
                                         _number(trial.mean("value")),
                                         _number(trial.mean("time_ratio"))]) + " |")
    return "\n".join(lines) + "\n"


def presets_text(selections: Sequence[Selection], budget: float) -> str:
    """The presets file: a header saying how it was chosen, then one entry per preset."""
    limit = ("no time budget" if not math.isfinite(budget)
             else f"unlearning in at most {budget:.0%} of the retraining's time on average")
    header = textwrap.wrap(f"Each method's settings, chosen by `forgetmi select` (README, "
                           f"\"Tuning\"): {RULE.format(limit=limit)}. A run's score: "
                           f"{DEFINITION}.",
                           width=98, initial_indent="# ", subsequent_indent="# ")
    header.append("# From:")
    for s in selections:
        trial = s.trials[s.chosen]
        header.append(f"#   {s.name}: {s.sweep}, trial {trial.id} of {len(s.trials)}, mean "
                      f"score {trial.mean('value'):.3f} over "
                      f"{', '.join(replicate_name(r) for r in s.replicates)}")
    body = yaml.safe_dump({s.name: s.preset() for s in selections}, sort_keys=False,
                          allow_unicode=True)
    return "\n".join(header) + "\n" + body
