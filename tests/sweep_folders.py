"""Sweep run folders with hand-made but valid files, for the readers of a sweep (report, select):
``sweep_params.json``, the engine's ``timing.json`` and ``metrics.json`` in the evaluate schema
(:func:`tests.test_report.metrics_doc`) with the ``paired`` and ``score`` blocks evaluate writes
against a retrained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from forgetmi.evaluation.score import score as score_of
from tests.test_report import metrics_doc

RETRAINED_SECONDS = 100.0


def sweep_run(folder: Path, params: dict, seed: int, score: float | None = None,
              ratio: float = 0.05, percent: int = 10, state: str = "scored",
              legacy: bool = False) -> Path:
    """One run of a sweep. ``state``: "scored"; "unscored" (evaluated without a retrained run);
    "unevaluated" (timing.json only); "failed" (sweep_params.json and config.yaml only, as a
    run that died).
    ``score`` splits into an attack gap of 0.6 × score and a utility gap of 0.4 × score;
    ``legacy`` leaves out the score block (files written before evaluate recorded one)."""
    folder.mkdir(parents=True)
    (folder / "sweep_params.json").write_text(json.dumps(params))
    # The job saves its config before it trains: a run that died has one.
    (folder / "config.yaml").write_text(json.dumps(
        {"seed": seed, "data": {"forget_set": f"forget_set_{percent}per.csv"},
         "unlearn": {"method": params.get("method", "forgetmi")}}))
    if state == "failed":
        return folder
    (folder / "timing.json").write_text(json.dumps(
        {"job": "unlearn", "train_seconds": ratio * RETRAINED_SECONDS, "world_size": 1}))
    if state == "unevaluated":
        return folder
    method = params.get("method", "forgetmi")
    doc = metrics_doc(method, method, percent, seed, np.random.default_rng(seed))
    doc["paired"] = doc["score"] = None
    if state == "scored":
        doc["paired"] = {"fvu_auc": {"diff": 0.6 * score, "se": 0.02},
                         "test_auc": {"diff": -0.4 * score, "se": 0.01}}
        if not legacy:
            doc["score"] = {**score_of(doc["paired"]), "time_ratio": ratio,
                            "retrained": f"retrained/{percent}/s{seed}"}
    (folder / "metrics.json").write_text(json.dumps(doc))
    return folder
