"""Jobs for the local executor's tests: each is a ``main(argv) -> exit code`` a Task can name,
cheap to start (no torch), and saying in its output which task it is."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def rendezvous(argv: list[str]) -> int:
    """``MINE OTHER SECONDS``: create MINE, then wait up to SECONDS for OTHER. Both tasks of a
    pair succeed only if they run at the same time."""
    mine, other, seconds = Path(argv[0]), Path(argv[1]), float(argv[2])
    threads = ", ".join(f"{name}={os.environ.get(name)}"
                        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    print(f"task {mine.stem} started, {threads}", flush=True)
    mine.touch()
    deadline = time.monotonic() + seconds
    while not other.exists():
        if time.monotonic() > deadline:
            print(f"task {mine.stem}: {other.stem} never started", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print(f"task {mine.stem} met {other.stem}", flush=True)
    return 0


def whoami(argv: list[str]) -> int:
    """``FILE``: write this process's parent pid, its working folder and two variables."""
    import json
    Path(argv[0]).write_text(json.dumps({
        "ppid": os.getppid(), "cwd": os.getcwd(), "task": os.environ.get("FORGETMI_TEST_TASK"),
        "threads": os.environ.get("OMP_NUM_THREADS"), "stale": os.environ.get("FORGETMI_STALE")}))
    print("whoami done", flush=True)
    return int(argv[1]) if len(argv) > 1 else 0
