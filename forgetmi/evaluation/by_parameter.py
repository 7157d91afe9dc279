"""A sweep's trials against its swept parameters: the report's by-parameter table.

One row per trial (a setting of the sweep's parameters, over its seeds and forget sizes): a
column per swept key (a key whose value differs between trials; place keys such as the seed
are not settings), the mean score and its parts over the trial's scored replicates, how many
replicates it has, and the mean time ratio; sorted by score, lowest (closest to retraining)
first.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import pandas as pd

from forgetmi.evaluation.score import DEFINITION
from forgetmi.evaluation.trials import SweepRun, format_value, group, swept_keys

# Score-block figure -> table column, in table order.
FIGURES = {"value": "score", "attack_gap": "attack_gap", "utility_gap": "utility_gap",
           "attack_diff": "attack_diff", "utility_diff": "utility_diff"}
HEADINGS = {"score": "Score", "attack_gap": "Attack gap", "utility_gap": "Test AUC gap",
            "attack_diff": "ΔAttack AUC", "utility_diff": "ΔTest AUC",
            "replicates": "Replicates", "time_ratio": "vs retrain"}


def _cell(value: Any) -> Any:
    """A setting as a table cell: numbers and strings as they are, anything else as JSON."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def parameter_table(runs: Sequence[SweepRun]) -> tuple[pd.DataFrame, list[str]]:
    """The table and its swept keys; empty when ``runs`` holds no sweep run."""
    trials = group(runs)
    keys = swept_keys(t.settings for t in trials.values())
    rows = []
    for trial in trials.values():
        row: dict[str, Any] = {"trial": trial.id}
        row.update({key: _cell(trial.settings.get(key)) for key in keys})
        row.update({column: trial.mean(figure) for figure, column in FIGURES.items()})
        row["replicates"] = len(trial.scored())
        row["runs"] = len(trial.runs)
        row["time_ratio"] = trial.mean("time_ratio")
        rows.append(row)
    rows.sort(key=lambda r: (math.isnan(r["score"]), r["score"], r["trial"]))
    columns = ["trial", *keys, *FIGURES.values(), "replicates", "runs", "time_ratio"]
    return pd.DataFrame(rows, columns=columns), keys


def _number(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def render_markdown(table: pd.DataFrame, keys: Sequence[str]) -> str:
    lines = ["## Trials by parameter", "",
             f"Each trial of the sweep: its swept settings ({', '.join(keys) or 'none differ'}), "
             f"the mean over its scored replicates (seed × forget size) of the score — "
             f"{DEFINITION} — and its parts, and the mean unlearning time over the retraining's; "
             "lowest score first.", "",
             "| Trial | " + " | ".join([*keys, *(HEADINGS[c] for c in FIGURES.values()),
                                       HEADINGS["replicates"], HEADINGS["time_ratio"]]) + " |",
             "|---|" + "---|" * len(keys) + "---:|" * (len(FIGURES) + 2)]
    for row in table.to_dict("records"):
        cells = [format_value(row[k]).replace("|", "\\|") for k in keys]
        cells += [_number(row[c], signed=c.endswith("_diff")) for c in FIGURES.values()]
        cells += [f"{row['replicates']}/{row['runs']}", _number(row["time_ratio"])]
        lines.append(f"| {row['trial']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def json_table(table: pd.DataFrame, keys: Sequence[str]) -> dict[str, Any]:
    """report.json's ``by_parameter``: the swept keys and one entry per trial (null for NaN)."""
    def clean(value):
        value = value.item() if hasattr(value, "item") else value   # numpy scalars
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return {"swept": list(keys), "definition": DEFINITION,
            "rows": [{k: clean(v) for k, v in row.items()} for row in table.to_dict("records")]}
