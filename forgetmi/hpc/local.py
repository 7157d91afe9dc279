"""Running an array's tasks on this machine, several at once (``--executor local --jobs N``).

Each task is a child process, as on Slurm, with its output (stdout and stderr) in its own log
file under the submission folder (a single-process task forked from a warm server,
:mod:`forgetmi.hpc.warm`, to skip the imports); at most ``jobs`` run at a time (default: one per core), each
with one thread unless ``OMP_NUM_THREADS`` says otherwise. A task that fails does not stop the
others; the caller records every task's log and end in the manifest, then fails naming each
failed task and its log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from forgetmi.errors import ForgetMIError
from forgetmi.hpc.tasks import Task

logger = logging.getLogger("forgetmi.hpc")

# The thread pools a child would otherwise size to every core of the machine.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class LocalJob:
    """A task that ran here: where its output is, and why it failed (None: it succeeded)."""

    name: str
    log: Path
    error: str | None = None


def cores() -> int:
    """The cores this process may use (its affinity, which a container or taskset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def log_path(folder: Path, name: str) -> Path:
    """``FOLDER/NAME.log``, the task's name made a file name (``evaluate/abc`` -> ``evaluate_abc``)."""
    return Path(folder) / (re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") + ".log")


def thread_env() -> dict[str, str]:
    """Each task's thread pools: one thread (tasks, not threads, share out the cores), or the
    ``OMP_NUM_THREADS`` this process was given. One number for every pool: with OpenMP at one
    thread and MKL/OpenBLAS at two, tasks on a busy two-core machine took eight times the CPU
    time of one-thread tasks (the extra BLAS threads waiting, busily, for a core)."""
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    return {name: os.environ.get(name, threads) for name in THREAD_VARIABLES}


def run_tasks(tasks: list[Task], folder: Path, jobs: int = 0) -> list[LocalJob]:
    """Run ``tasks`` here, at most ``jobs`` at once (0: one per core); returns each task's
    :class:`LocalJob`, in the order of ``tasks``, once all have ended."""
    from forgetmi.utils.logs import setup_logging

    setup_logging()  # once, here: the worker threads below log through it
    jobs = min(jobs or cores(), len(tasks)) or 1
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    env = thread_env()
    from forgetmi.hpc import warm
    started_warm = warm.enabled()
    logger.info("running %d task(s) here, %d at a time, %s thread(s) each; logs in %s",
                len(tasks), jobs, env["OMP_NUM_THREADS"], folder)

    def run_one(task: Task) -> LocalJob:
        log = log_path(folder, task.name)
        logger.info("%s: started (log: %s)", task.name, log)
        try:
            # Single-process tasks fork from a server that has imported torch & co. once.
            dataclasses.replace(task, env={**env, **task.env}, log=str(log),
                                warm=started_warm and not task.accelerate_config)()
        except Exception as err:  # says the exit code and the log, which holds the traceback
            logger.error("%s failed: %s", task.name, err)
            return LocalJob(task.name, log, str(err))
        logger.info("%s: done", task.name)
        return LocalJob(task.name, log)

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="forgetmi-task") as pool:
        return list(pool.map(run_one, tasks))


def failures(jobs: list) -> list[LocalJob]:
    """The tasks of ``jobs`` that ran here and failed (none for jobs submitted to Slurm)."""
    return [job for job in jobs if isinstance(job, LocalJob) and job.error is not None]


def raise_failures(failed: list[LocalJob], total: int) -> None:
    """Fail naming each failed task and its log, so nothing that depends on them runs."""
    if failed:
        named = "; ".join(f"{job.name} (log: {job.log})" for job in failed)
        raise ForgetMIError(f"{len(failed)} of {total} task(s) failed: {named}; the others "
                            "finished, and a resubmission runs only what is missing")
