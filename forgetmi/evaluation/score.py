"""A run's score against its retrained model: the one number a sweep optimises.

    score = |attack AUC − retrained's| + |test AUC − retrained's|        lower is better

The attack is the headline forget-vs-unseen loss attack, the test AUC the joint head's, both
differences paired on the same rows (``metrics.json`` ``paired``). 0 is a model that neither
remembers more nor less than retraining and predicts as well: a method that wrecks the model
(the attack falls to chance and the test AUC with it) scores its utility loss, and a method
that does nothing scores the original's memory. ``time_ratio`` is the unlearning's
device-seconds over the retraining's, for the budget rule of a selection; it is not in the
score. The parts are kept beside the number so a selection can be read, not just believed.
"""

from __future__ import annotations

import math
from pathlib import Path

from forgetmi.utils.run_folder import RunFolder

DEFINITION = ("|forget-vs-unseen attack AUC - retrained's| + |test AUC (joint) - retrained's|, "
              "paired on the same rows; lower is better, 0 = as retraining")
# The W&B summary keys of the score and its parts (the shipped sweeps optimise SCORE_KEY).
SCORE_KEY = "score"


def device_seconds(run: str | Path) -> float | None:
    """Training or unlearning seconds × processes: runs on other world sizes compare fairly."""
    timing = RunFolder(run).timing()
    if not timing or timing.get("train_seconds") is None:
        return None
    return float(timing["train_seconds"]) * int(timing.get("world_size") or 1)


def score(paired: dict | None, run: str | Path | None = None,
          retrained: str | Path | None = None) -> dict | None:
    """The score block of ``metrics.json`` from its ``paired`` block; None without one (no
    retrained reference) or when a part is undefined (a partition without rows)."""
    if not paired:
        return None
    attack = (paired.get("fvu_auc") or {}).get("diff")
    utility = (paired.get("test_auc") or {}).get("diff")
    if attack is None or utility is None or not (math.isfinite(attack) and math.isfinite(utility)):
        return None
    ratio = None
    if run is not None and retrained is not None:
        mine, theirs = device_seconds(run), device_seconds(retrained)
        ratio = mine / theirs if mine is not None and theirs else None
    return {"value": abs(attack) + abs(utility), "attack_gap": abs(attack),
            "utility_gap": abs(utility), "attack_diff": attack, "utility_diff": utility,
            "time_ratio": ratio, "retrained": None if retrained is None else str(retrained),
            "definition": DEFINITION}


def summary_figures(result: dict) -> dict:
    """The figures of an evaluation a W&B run's summary carries (flat ``/`` keys): the score
    and its parts, the headline attack, and each partition's joint-head AUC and F1."""
    out = {}
    block = result.get("score")
    if block:
        out[SCORE_KEY] = block["value"]
        for key in ("attack_gap", "utility_gap", "time_ratio"):
            if block.get(key) is not None:
                out[f"{SCORE_KEY}/{key}"] = block[key]
    mia = result.get("mia") or {}
    for name in ("forget_vs_unseen", "forget_vs_test", "calibrated"):
        if (mia.get(name) or {}).get("auc") is not None:
            out[f"eval/mia/{name}/auc"] = mia[name]["auc"]
    for part, heads in (result.get("metrics") or {}).items():
        for metric in ("auc", "f1"):
            value = ((heads or {}).get("joint") or {}).get(metric, {}).get("value")
            if value is not None:
                out[f"eval/{part}/{metric}"] = value
    return out
