"""Submitting tasks as one Slurm array (submitit), or running them here.

``slurm``: one ``sbatch --array`` per call, concurrency capped by ``slurm_array_parallelism``;
each array task is a multi-process job (``tasks_per_node`` = processes, one per GPU) whose
ranks reach Accelerate/DeepSpeed through :class:`forgetmi.hpc.tasks.Task`. Dependencies
between arrays are Slurm's (``afterok``): nothing polls. ``local`` runs an array's tasks in
child processes here, up to ``jobs`` at once, each with its own log (:mod:`forgetmi.hpc.local`),
and returns when all have ended, so the next array starts after it as on Slurm; ``debug`` runs
them one after the other in this process through submitit's debug executor (for stepping
through with a debugger).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from forgetmi.errors import ForgetMIError
from forgetmi.hpc.local import run_tasks
from forgetmi.hpc.tasks import Task

logger = logging.getLogger("forgetmi.hpc")

EXECUTORS = ("slurm", "local", "debug")


@dataclass
class HpcConfig:
    """Where and how tasks run. Every field is settable from the command line."""

    executor: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 240
    mem_gb: float | None = None
    constraint: str | None = None
    gpus_per_task: int = 0              # GPUs of one array task (its processes, one per GPU)
    processes: int = 1                  # ranks per task; = gpus_per_task when GPUs are used
    cpus_per_process: int = 1
    max_parallel: int = 0               # slurm_array_parallelism; 0 = no cap
    jobs: int = 0                       # local executor: tasks at once; 0 = one per core
    accelerate_config: str | None = None  # configs/accelerate/*.yaml for tasks with > 1 process
    sbatch: dict = field(default_factory=dict)   # extra sbatch options, e.g. {"exclusive": True}
    setup: list[str] = field(default_factory=list)  # shell lines before each task (module load)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ForgetMIError(f"executor must be one of {', '.join(EXECUTORS)}, got "
                                f"{self.executor!r}")
        if self.jobs < 0:
            raise ForgetMIError(f"jobs must be 0 (one task per core) or more, got {self.jobs}")
        if self.gpus_per_task and self.processes == 1:
            self.processes = self.gpus_per_task
        if self.processes > 1 and not self.accelerate_config:
            self.accelerate_config = "configs/accelerate/ddp.yaml"


def require_executor(hpc: HpcConfig) -> None:
    """Refuse to submit to Slurm where there is none, before anything is written."""
    if hpc.executor == "slurm" and shutil.which("sbatch") is None:
        raise ForgetMIError("Slurm not found (no sbatch on PATH): run the tasks on this machine "
                            "with --executor local (--jobs N at once), or submit from a Slurm "
                            "login node")


def build_executor(hpc: HpcConfig, folder: Path, name: str, after: list[str] | None = None):
    import submitit

    if hpc.executor == "debug":
        return submitit.DebugExecutor(folder=folder)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    extra = dict(hpc.sbatch)
    extra.update({k: getattr(hpc, k) for k in ("account", "qos", "constraint") if getattr(hpc, k)})
    if after:
        # Slurm holds the whole array until every job it depends on has succeeded, and drops
        # it if one of them fails.
        extra["dependency"] = "afterok:" + ":".join(after)
        extra["kill-on-invalid-dep"] = "yes"
    params = {"name": name, "timeout_min": hpc.time_min, "nodes": 1,
              "tasks_per_node": hpc.processes, "cpus_per_task": hpc.cpus_per_process,
              "slurm_additional_parameters": extra, "slurm_setup": list(hpc.setup)}
    optional = {"slurm_partition": hpc.partition, "mem_gb": hpc.mem_gb,
                "gpus_per_node": hpc.gpus_per_task, "slurm_array_parallelism": hpc.max_parallel}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


def _run_all(tasks: list[Task], calls: list) -> list:
    """Run every task in this process (``debug``), as an array runs all its tasks: one that
    fails (a diverged sweep trial, say) does not stop the others. Then fail, naming each failed
    task, so nothing that depends on this array runs."""
    results, failed = [], []
    for task, call in calls:
        logger.info("running %s", task.name)
        try:
            results.append(call())
        except Exception as err:  # the task's own log holds its traceback
            logger.error("%s failed: %s", task.name, err)
            failed.append(task.name)
    if failed:
        raise ForgetMIError(f"{len(failed)} of {len(tasks)} task(s) failed: {', '.join(failed)}; "
                            "the others finished, and a resubmission runs only what is missing")
    return results


def submit_array(hpc: HpcConfig, tasks: list[Task], folder: Path, name: str,
                 after: list[str] | None = None) -> list:
    """Submit ``tasks`` as one array (``afterok`` on the job ids in ``after``); returns the
    submitit jobs (for ``local``, once every task has ended, a
    :class:`~forgetmi.hpc.local.LocalJob` per task: the caller records them, then fails with
    :func:`~forgetmi.hpc.local.raise_failures`)."""
    if not tasks:
        return []
    folder = Path(folder)
    if hpc.executor == "local":
        return run_tasks(tasks, folder, hpc.jobs)
    executor = build_executor(hpc, folder, name, after)
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    if hpc.executor == "debug":
        # The debug executor runs a job when its result is asked for.
        _run_all(tasks, [(task, job.result) for task, job in zip(tasks, jobs)])
    if hpc.executor == "slurm":
        logger.info("submitted %s: array %s of %d task(s)%s", name, jobs[0].job_id.split("_")[0],
                    len(jobs), f", after {', '.join(after)}" if after else "")
    return jobs
