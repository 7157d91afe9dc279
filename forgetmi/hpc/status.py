"""``forgetmi status DIR``: the state of every task of a sweep or pipeline.

A task is *done* when its outputs say so (the run's ``timing.json`` or ``metrics.json``), whatever
Slurm remembers; otherwise Slurm's accounting (``sacct``) gives pending / running / failed /
cancelled / timeout, and a failed task shows the path of its log.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from forgetmi.errors import ForgetMIError

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


def _done(task: dict) -> bool:
    folder = Path(task["output_dir"])
    if task["kind"] == "evaluate":
        return (folder / "metrics.json").is_file()
    if task["kind"] == "report":
        return (folder / "report.json").is_file()
    timing = folder / "timing.json"
    return timing.is_file() and json.loads(timing.read_text()).get("job") is not None


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
        if _done(task):
            state = "done"
        elif task.get("job_id"):
            state = states.get(task["job_id"], "unknown")
            if state == "completed":
                state = "failed"  # Slurm says it ended well, but the run left no result
        else:
            state = "not submitted"
        out.append({**task, "state": state})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi status", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sweep's --out folder or a protocol's output_dir")
    parser.add_argument("--json", action="store_true", help="print the states as JSON")
    args = parser.parse_args(argv)
    try:
        tasks = task_states(args.folder)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2
    if args.json:
        import sys
        sys.stdout.write(json.dumps(tasks, indent=2) + "\n")
        return 0
    for task in tasks:
        extra = f"  log: {task['log']}" if task["state"] in ("failed", "timeout", "cancelled") \
            and task.get("log") else ""
        job = task.get("job_id") or "—"
        logger.info("%-44s %-8s %-14s %s%s", task["name"], task["kind"], task["state"], job, extra)
    counts = Counter(t["state"] for t in tasks)
    logger.info("%d task(s): %s", len(tasks), ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
