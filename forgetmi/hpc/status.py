"""The state of every task of a submitted sweep or pipeline (``forgetmi status DIR``).

A task is *done* when its outputs say so (the run's ``timing.json`` or ``metrics.json``), whatever
Slurm remembers; otherwise Slurm's accounting (``sacct``) gives pending / running / failed /
cancelled / timeout (a task run here, what the manifest recorded), and a failed task shows the
path of its log.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

from forgetmi.errors import ForgetMIError
from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi.hpc")

SLURM_STATES = {"PENDING": "pending", "REQUEUED": "pending", "RUNNING": "running",
                "COMPLETING": "running", "COMPLETED": "completed", "FAILED": "failed",
                "CANCELLED": "cancelled", "TIMEOUT": "timeout", "OUT_OF_MEMORY": "failed",
                "NODE_FAIL": "failed", "PREEMPTED": "pending", "BOOT_FAIL": "failed",
                "DEADLINE": "timeout"}


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` from sacct (array tasks as ``ARRAY_INDEX``); empty without Slurm."""
    ids = sorted({j.split("_")[0] for j in job_ids if j})
    if not ids or shutil.which("sacct") is None:
        return {}
    proc = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids),
                           "--format=JobID,State"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        logger.warning("sacct failed: %s", proc.stderr.strip()[:200])
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        if "|" not in line:
            continue
        job, state = line.split("|", 1)
        states[job] = SLURM_STATES.get(state.split()[0], state.split()[0].lower())
    return states


def task_states(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    manifests = [folder / name for name in ("sweep.json", "pipeline.json")
                 if (folder / name).is_file()]
    if not manifests:
        raise ForgetMIError(f"{folder}: no sweep.json or pipeline.json (was anything submitted "
                            "from here?)")
    tasks = [t for m in manifests for t in json.loads(m.read_text())["tasks"]]
    states = slurm_states([t["job_id"] for t in tasks if t.get("job_id")])
    out = []
    for task in tasks:
        if RunFolder(task["output_dir"]).finished(task["kind"]):
            state = "done"
        elif task.get("job_id"):
            state = states.get(task["job_id"], "unknown")
            if state == "completed":
                state = "failed"  # Slurm says it ended well, but the run left no result
        elif task.get("state") == "failed":
            state = "failed"      # it ran here (--executor local) and failed: see its log
        else:
            state = "not submitted"
        out.append({**task, "state": state})
    return out
