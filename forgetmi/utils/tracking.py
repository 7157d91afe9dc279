"""Metrics out of the run: JSON lines beside the checkpoints, and wandb (rank 0 only)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

logger = logging.getLogger("forgetmi")


def run_name_for(output_dir: str | os.PathLike) -> str:
    """A deterministic run name (and wandb id) from the output folder, so a resumed run
    continues the same wandb run."""
    path = Path(output_dir).resolve()
    name = "-".join(path.parts[-2:])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:120] or "forgetmi"


def _clean(value):
    if hasattr(value, "item"):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    """Writes ``metrics.jsonl`` and mirrors it to wandb; a no-op on non-main ranks."""

    def __init__(self, output_dir: Path, tracking, config: dict, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.wandb_run = None
        self.mode = tracking.wandb
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tracking.wandb not in ("offline", "online", "disabled"):
            raise ValueError(f"tracking.wandb must be offline, online or disabled, got {tracking.wandb!r}")
        if tracking.wandb != "disabled":
            import wandb
            name = tracking.run_name or run_name_for(output_dir)
            # Under a W&B sweep agent the run's id comes from the agent (WANDB_RUN_ID), which
            # ties it to the sweep; otherwise a deterministic id lets a resumed run continue.
            ident = {} if os.environ.get("WANDB_SWEEP_ID") else {"name": name, "id": name,
                                                                   "resume": "allow"}
            self.wandb_run = wandb.init(project=tracking.project, entity=tracking.entity,
                                        mode=tracking.wandb, dir=str(output_dir), config=config,
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

    def finish(self) -> None:
        if self.wandb_run is None:
            return
        run_dir = Path(self.wandb_run.dir).parent
        self.wandb_run.finish()
        self.wandb_run = None
        if self.mode == "offline":
            logger.info("wandb run saved offline; upload it with: wandb sync %s", run_dir)
