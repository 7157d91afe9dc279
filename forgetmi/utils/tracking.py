"""Metrics out of the run: the training log (JSON lines, ``train_log.jsonl``) beside the
checkpoints, and wandb (rank 0 only).

A run's wandb id is readable and unique: the job, the seed and the folder's last names, then a
short hash of the resolved output folder. Two sweeps that differ only in their ``--out`` and
``--seed`` (the tuning recipe) get two ids, so ``wandb sync`` keeps them apart, and a resumed run
(same folder, job and seed) gets the same id and continues its wandb run. ``group`` is the sweep
or protocol a run belongs to (``tracking.group``), ``job_type`` the job that runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path

from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi")

# W&B refuses some characters in ids (":;,#?/'") and URLs quote others: ids keep to these,
# and to 64 characters (short enough for every W&B limit on ids and names).
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ID = 64
MAX_NAME = 128    # groups and display names


def _slug(*parts) -> str:
    return _UNSAFE.sub("-", "-".join(str(p) for p in parts if p not in (None, ""))).strip("-")


def _hashed(head: str, path: Path, limit: int) -> str:
    """``head``, the folder's last two names, then a hash of the resolved folder, in at most
    ``limit`` characters: the names are cut from their start (the most specific are kept),
    never the head or the hash."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    names = _slug(*path.parts[-2:])
    room = max(0, limit - len(head) - len(digest) - 2)
    return _slug(head, names[len(names) - room:] if room else "", digest)


def run_name_for(output_dir: str | os.PathLike, job: str | None = None,
                 seed: int | None = None) -> str:
    """A run's display name: job, seed and the folder's last two names (not unique)."""
    path = Path(output_dir).resolve()
    name = _slug(job, None if seed is None else f"s{seed}", *path.parts[-2:])
    return name[-MAX_NAME:].strip("-") or "forgetmi"


def run_id_for(output_dir: str | os.PathLike, job: str | None = None,
               seed: int | None = None) -> str:
    """The wandb id of the run that ``job`` (train | retrain | unlearn) with ``seed`` makes in
    ``output_dir``: the same for the same three, so a resumed run continues its wandb run and a
    later job (an evaluation) can attach to it; different for any other folder."""
    head = _slug(job, None if seed is None else f"s{seed}")
    return _hashed(head, Path(output_dir).resolve(), MAX_ID)


def group_for(kind: str, folder: str | os.PathLike) -> str:
    """The wandb group of every run a sweep or protocol starts: ``kind`` (``sweep-NAME``,
    ``protocol``), the folder's last two names and its hash (two sweeps whose folders end
    alike stay two groups)."""
    return _hashed(_slug(kind)[:MAX_NAME // 2], Path(folder).resolve(), MAX_NAME)


def log_summary(run_dir: str | os.PathLike, tracking, job: str | None, seed: int | None,
                figures: dict) -> None:
    """Put an evaluation's figures into the summary of the W&B run that ``job`` made in
    ``run_dir``: the run of the agent under a W&B sweep agent, else the run's own id (resumed).
    Offline, this writes a second run file with the same id; ``wandb sync`` merges them."""
    if tracking.wandb == "disabled" or not figures:
        return
    import wandb
    under_agent = bool(os.environ.get("WANDB_SWEEP_ID"))
    ident = {} if under_agent else {"id": run_id_for(run_dir, job, seed),
                                    "name": tracking.run_name or run_name_for(run_dir, job, seed)}
    run = wandb.init(project=tracking.project, entity=tracking.entity, mode=tracking.wandb,
                     dir=str(run_dir), group=tracking.group, job_type=job, resume="allow",
                     settings=wandb.Settings(silent=True, console="off"), **ident)
    clean = {k: _clean(v) for k, v in figures.items()}
    run.summary.update({k: v for k, v in clean.items() if v is not None})
    folder = Path(run.dir).parent
    run.finish()
    if tracking.wandb == "offline":
        logger.info("evaluation in the wandb run's summary (offline); upload it with: "
                    "wandb sync %s", folder)


def _clean(value):
    if hasattr(value, "item"):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """Writes the run's training log (``train_log.jsonl``) and mirrors it to wandb; a no-op on
    non-main ranks."""

    def __init__(self, output_dir: Path, tracking, config: dict, enabled: bool = True,
                 job: str | None = None, seed: int | None = None):
        self.enabled = enabled
        self.path = RunFolder(output_dir).train_log
        self.wandb_run = None
        self.mode = tracking.wandb
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tracking.wandb not in ("offline", "online", "disabled"):
            raise ValueError(f"tracking.wandb must be offline, online or disabled, got {tracking.wandb!r}")
        if tracking.wandb != "disabled":
            import wandb
            # Under a W&B sweep agent the run's id comes from the agent (WANDB_RUN_ID), which
            # ties it to the sweep; otherwise a deterministic id lets a resumed run continue.
            ident = {} if os.environ.get("WANDB_SWEEP_ID") else {
                "name": tracking.run_name or run_name_for(output_dir, job, seed),
                "id": run_id_for(output_dir, job, seed), "resume": "allow"}
            self.wandb_run = wandb.init(project=tracking.project, entity=tracking.entity,
                                        mode=tracking.wandb, dir=str(output_dir), config=config,
                                        group=tracking.group, job_type=job,
                                        settings=wandb.Settings(silent=True, console="off"),
                                        **ident)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in record.items() if v is not None}, step=int(step))

    def finish(self, exit_code: int = 0) -> None:
        """Close the wandb run (``exit_code`` != 0 marks it failed) and say how to upload it."""
        if self.wandb_run is None:
            return
        run_dir = Path(self.wandb_run.dir).parent
        self.wandb_run.finish(exit_code=exit_code)
        self.wandb_run = None
        if self.mode == "offline":
            logger.info("wandb run saved offline; upload it with: wandb sync %s", run_dir)
