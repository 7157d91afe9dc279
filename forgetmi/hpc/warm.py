"""Local tasks started warm: each a fresh fork of a server that has already imported the heavy
libraries, so a short task does not pay ~4 s of imports (torch, transformers, accelerate,
scikit-learn) before its first line of work.

A benchmark of several hundred short unlearning and evaluation tasks spends a quarter of its
CPU time importing; here each task costs a fork. The child is still its own process, as a cold
task is: its own environment (replaced, not inherited from the server), working folder, log
file on stdout and stderr, thread count and exit code. Only single-process tasks start warm
(a multi-rank task needs its launcher); ``FORGETMI_WARM_START=0`` turns it off.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

# Imported once by the server (not by this module): what every job imports before it starts.
PRELOAD = "forgetmi.hpc.preload"
_lock = threading.Lock()
_context = None


def enabled() -> bool:
    return os.environ.get("FORGETMI_WARM_START", "1") != "0"


def _server():
    global _context
    with _lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([PRELOAD])
            _context = context
        return _context


def run(target: str, argv: list[str], env: dict[str, str], cwd: str, log: str) -> int:
    """Run the job ``target`` with ``argv`` in a fork of the warm server; its exit code."""
    process = _server().Process(target=_child, args=(target, list(argv), dict(env), cwd, log),
                                name=f"forgetmi-task:{target}")
    process.start()
    process.join()
    return process.exitcode if process.exitcode is not None else 1


def _child(target: str, argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    import logging
    import sys
    import traceback

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(max(1, int(env.get("OMP_NUM_THREADS") or 1)))
    # One process, one lock: tqdm's default also makes a cross-process semaphore, which a task
    # leaving by os._exit never releases (the server's resource tracker then warns of leaks).
    tqdm.set_lock(threading.RLock())
    from forgetmi.hpc.run import run as run_job

    try:
        code = run_job(target, argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - the log holds it, the exit code says it
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))
