"""A run's folder on disk, and the one answer to "is this run finished?".

Training, retraining and unlearning end by writing ``timing.json`` with the job that ran
(the engine's last act), evaluation by writing ``metrics.json``, a report by ``report.json``.
Every place that skips, resubmits or reports a run asks :meth:`RunFolder.finished`, so a
resubmission never redoes or skips a run by a different rule.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from forgetmi.errors import ForgetMIError, OutputError
from forgetmi.utils.atomic import check_target

TRAINING_JOBS = ("train", "retrain", "unlearn")
# What a saved model folder holds (``JointModel.save_pretrained``), and nothing else.
MODEL_CONFIG, MODEL_WEIGHTS = "config.json", "model.safetensors"
# The engine's model folders in a run: the final model and the best-validated one.
MODEL_FOLDERS = ("model", "best")
# The engine's log of losses and validation figures, step by step (JSON lines), beside the
# evaluation's metrics.json; runs made before it had its own name wrote it as metrics.jsonl.
TRAIN_LOG, OLD_TRAIN_LOG = "train_log.jsonl", "metrics.jsonl"


class RunFolder:
    """``RUN/``: ``config.yaml``, ``model/``, ``train_log.jsonl``, ``timing.json``,
    ``metrics.json`` (evaluated)."""

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

    @property
    def train_log(self) -> Path:
        """The training log: ``train_log.jsonl``, or an older run's ``metrics.jsonl`` (the
        new name where neither is written yet, so a resumed older run continues its own)."""
        new, old = self.path / TRAIN_LOG, self.path / OLD_TRAIN_LOG
        return old if old.is_file() and not new.is_file() else new

    def train_records(self) -> list[dict]:
        """The training log's records, in order (none before the first is written)."""
        path = self.train_log
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as err:
            raise ForgetMIError(f"{path}: unreadable training log ({err})") from None

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


def model_meta(path: str | Path) -> dict | None:
    """The saved config of a forgetmi model folder, or None when ``path`` is anything else (a
    folder holding more than the model's two files is someone's, not a saved model)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    if sorted(p.name for p in path.iterdir()) != sorted((MODEL_CONFIG, MODEL_WEIGHTS)):
        return None
    try:
        meta = json.loads((path / MODEL_CONFIG).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("forgetmi_model"), dict) \
        else None


def _replaceable_model(path: Path) -> bool:
    """A forgetmi model folder, or an empty folder (nothing to lose)."""
    return model_meta(path) is not None or (path.is_dir() and not path.is_symlink()
                                            and not any(path.iterdir()))


def check_model_target(path: str | Path, replace: bool = False) -> None:
    """Refuse, before anything is written, a model folder target that is not free: with
    ``replace``, only a forgetmi model folder (or an empty folder) may be there."""
    path = Path(path)
    if replace and path.is_dir() and not _replaceable_model(path):
        raise OutputError(f"{path}: not a forgetmi model folder (only {MODEL_CONFIG} and "
                          f"{MODEL_WEIGHTS}); refusing to replace it")
    check_target(path, folder=True, replace=replace)


# Settings that do not change what a run computes: a finished run is reused across them (and
# across a move of its folder), and an interrupted one resumed.
INCIDENTAL = ("output_dir", "tracking.", "train.log_every", "train.checkpoint_every",
              "train.keep_checkpoints", "train.resume", "train.stop_after", "train.num_workers",
              "data.workers", "data.cache_dir", "evaluate.")
# Sections a job never reads: a training or retraining uses no unlearning or noise setting, so
# they neither make its run another one nor stop its resume.
UNREAD = {"train": ("unlearn.", "noise."), "retrain": ("unlearn.", "noise.")}
# Settings that are paths: compared as the files they name from here (runs save them absolute,
# older runs relative to where they were started).
_PATHS = ("data.root", "data.split", "data.reports", "data.img_dir", "data.forget_set",
          "data.holdout", "data.exclude", "data.synonyms", "unlearn.original")


def flatten(values: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-3}}`` as ``{"train.lr": 1e-3}`` (tuples as lists, as YAML has them)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _same_path(key: str, before: dict, now: dict) -> bool:
    """Whether path setting ``key`` names the same file in both (relative data paths resolve
    against each one's ``data.root`` when it has one, else against the working directory)."""
    def where(flat: dict):
        value = flat[key]
        if not isinstance(value, str):
            return value
        value = os.path.expanduser(value)
        root = flat.get("data.root")
        if key.startswith("data.") and key != "data.root" and root and not os.path.isabs(value):
            value = os.path.join(os.path.expanduser(root), value)
        return os.path.normpath(os.path.abspath(value))
    return key in _PATHS and where(before) == where(now)


def setting_differences(before: dict, now: dict, same=lambda key: False) -> list[str]:
    """``key before -> now`` for each setting a run recorded (``before``, flat) that differs from
    ``now`` (flat), leaving out incidental keys, settings ``now`` leaves to the run (None),
    paths naming the same file, and keys ``same(key)`` says are equivalent."""
    return [f"{key} {before[key]!r} -> {now[key]!r}" for key in sorted(set(now) & set(before))
            if before[key] != now[key] and now[key] is not None
            and not key.startswith(INCIDENTAL) and not _same_path(key, before, now)
            and not same(key)]


def training_settings(config: dict, job: str | None = None) -> dict:
    """What a ``job`` run computes with (``config`` as ``to_dict`` gives it), flat, without
    the incidental keys and those the job does not read: what an interrupted run must be
    resumed with."""
    return {key: value for key, value in flatten(config).items()
            if not key.startswith(INCIDENTAL + UNREAD.get(job, ()))}


def settings_hash(settings: dict) -> str:
    """A short hash of :func:`training_settings`' result."""
    import hashlib
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_finished_settings(out: str | Path, job: str, config: dict) -> None:
    """Refuse to rerun a finished ``job`` in ``out`` with settings other than those it recorded
    (``config``: the new run's, as ``to_dict`` gives it): its folder would then describe a
    model it does not hold."""
    import yaml

    folder = RunFolder(out)
    if folder.job != job or not folder.config.is_file():
        return
    try:
        recorded = yaml.safe_load(folder.config.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise OutputError(f"{folder.config}: unreadable ({err}); remove the run to redo it") \
            from None
    differ = setting_differences(flatten(recorded), flatten(config),
                                 same=lambda key: key.startswith(UNREAD.get(job, ())))
    if differ:
        more = "; ..." if len(differ) > 3 else ""
        raise OutputError(f"output_dir {out}: a finished {job} run with other settings "
                          f"({'; '.join(differ[:3])}{more}); give another output_dir, or the "
                          "recorded settings")


def _within(inner: Path, outer: Path) -> bool:
    inner, outer = inner.resolve(), outer.resolve()
    return inner == outer or outer in inner.parents


def check_output_dir(out: str | Path, job: str, reads: Iterable[str | Path] = ()) -> None:
    """Refuse, before the first write, an ``output_dir`` a ``job`` run would falsify or
    destroy: one that is a file, that holds (or lies inside) a folder the run reads (its
    original model), that holds another job's finished run, or whose model folders are not
    models the engine saved."""
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"output_dir {out}: exists and is not a folder; expected a run folder")
    for source in map(Path, reads):
        if _within(source, out) or _within(out, source):
            raise OutputError(f"output_dir {out}: overlaps {source}, which this run reads; "
                              "choose another output_dir")
    finished = RunFolder(out).job
    if finished is not None and finished != job:
        raise OutputError(f"output_dir {out}: holds a finished {finished} run; a {job} run "
                          "there would overwrite its records: choose another output_dir")
    for name in MODEL_FOLDERS:
        if os.path.lexists(out / name) and not _replaceable_model(out / name):
            raise OutputError(f"{out / name}: exists and is not a forgetmi model folder; the "
                              "run would write its model there: choose another output_dir")
