"""A run's folder on disk, and the one answer to "is this run finished?".

Training, retraining and unlearning end by writing ``timing.json`` with the job that ran
(the engine's last act), evaluation by writing ``metrics.json``, a report by ``report.json``.
Every place that skips, resubmits or reports a run asks :meth:`RunFolder.finished`, so a
resubmission never redoes or skips a run by a different rule.
"""

from __future__ import annotations

import json
from pathlib import Path

from forgetmi.errors import ForgetMIError

TRAINING_JOBS = ("train", "retrain", "unlearn")


class RunFolder:
    """``RUN/``: ``config.yaml``, ``model/``, ``timing.json``, ``metrics.json`` (evaluated)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    def timing(self) -> dict | None:
        """The engine's ``timing.json`` (job, seconds, processes), or None before it ends."""
        path = self.path / "timing.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ForgetMIError(f"{path}: unreadable ({err}); remove it to rerun the run") from None

    @property
    def job(self) -> str | None:
        """The job that finished here (train | retrain | unlearn), None if none has."""
        timing = self.timing()
        return None if timing is None else timing.get("job")

    def finished(self, kind: str) -> bool:
        """Whether the job ``kind`` has finished in this folder: for a model-making job, that
        very job (a retraining is not a finished training); for an evaluation, its metrics;
        for a report, its report."""
        if kind == "evaluate":
            return self.metrics.is_file()
        if kind == "report":
            return (self.path / "report.json").is_file()
        if kind not in TRAINING_JOBS:
            raise ValueError(f"unknown job kind {kind!r}")
        return self.job == kind
