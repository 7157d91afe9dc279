"""``forgetmi status DIR``: the state of every task of a sweep or pipeline.

A task is *done* when its outputs say so (:class:`~forgetmi.utils.run_folder.RunFolder`),
whatever Slurm remembers; otherwise Slurm's accounting (``sacct``) gives pending / running /
failed / cancelled / timeout, and a failed task shows the path of its log.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from forgetmi.errors import exit_on_error
from forgetmi.hpc.status import task_states


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi status", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sweep's --out folder or a protocol's output_dir")
    parser.add_argument("--json", action="store_true", help="print the states as JSON")
    args = parser.parse_args(argv)
    tasks = task_states(args.folder)
    if args.json:
        sys.stdout.write(json.dumps(tasks, indent=2) + "\n")
        return 0
    # The table is the command's output: stdout, so `status | grep failed` works and -q keeps it.
    for task in tasks:
        extra = f"  log: {task['log']}" if task["state"] in ("failed", "timeout", "cancelled") \
            and task.get("log") else ""
        job = task.get("job_id") or "—"
        sys.stdout.write("%-44s %-8s %-14s %s%s\n" % (task["name"], task["kind"], task["state"],
                                                      job, extra))
    counts = Counter(t["state"] for t in tasks)
    sys.stdout.write("%d task(s): %s\n" % (len(tasks),
                                           ", ".join(f"{n} {s}" for s, n in counts.items())))
    return 0
