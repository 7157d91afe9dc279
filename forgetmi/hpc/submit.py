"""What every submitting job shares: the HPC settings from the command line and a YAML file,
and the submission manifest (``sweep.json`` / ``pipeline.json``) that ``forgetmi status`` reads.

A manifest lists each task (name, kind, output folder, Slurm job id, log); runs already finished
are recorded as done and never resubmitted, so resubmitting after a failure or a pre-emption
only runs what is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from forgetmi.config import ConfigError, from_dict, read_yaml
from forgetmi.errors import ForgetMIError
from forgetmi.hpc.executor import EXECUTORS, HpcConfig
from forgetmi.hpc.local import LocalJob
from forgetmi.hpc.tasks import Task

logger = logging.getLogger("forgetmi.hpc")


# -- the HPC settings on the command line ----------------------------------------------------------

def add_hpc_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("where tasks run (also from --hpc-config YAML)")
    g.add_argument("--hpc-config", help="YAML of these settings (executor, partition, "
                                        "gpus_per_task, ...; sbatch: a mapping; setup: shell "
                                        "lines run before each task); the options below win")
    g.add_argument("--executor", choices=EXECUTORS)
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time-min", type=int)
    g.add_argument("--mem-gb", type=float)
    g.add_argument("--constraint")
    g.add_argument("--gpus-per-task", type=int, help="GPUs (and processes) of one array task")
    g.add_argument("--processes", type=int, help="ranks of one array task (CPU runs)")
    g.add_argument("--cpus-per-process", type=int)
    g.add_argument("--max-parallel", type=int, help="array tasks running at once (Slurm)")
    g.add_argument("--jobs", type=int, metavar="N",
                   help="--executor local: tasks running at once, each a process with its "
                        "log in the submission's slurm/ folder (default: one per core, one "
                        "thread each)")
    g.add_argument("--accelerate-config", help="configs/accelerate/*.yaml for multi-rank tasks")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, repeatable (e.g. --sbatch exclusive=true)")


def hpc_options_given(args) -> list[str]:
    """The HPC options given on the command line (``--hpc-config``, ``--partition``, ...)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_hpc_arguments(parser)
    return [action.option_strings[0] for action in parser._actions
            if action.option_strings and action.dest != "executor"
            and getattr(args, action.dest, None) not in (None, [])]


def require_executor_flag(args) -> None:
    """Refuse HPC options without ``--executor`` where its absence means "run the jobs one by
    one in this process": they would be silently ignored."""
    given = hpc_options_given(args)
    if given and not getattr(args, "executor", None):
        raise ForgetMIError(f"{given[0]} is for tasks run with --executor slurm|local|debug; add "
                            "--executor, or drop it (without --executor the jobs run one by one "
                            "in this process)")


def _sbatch_options(values: dict, source) -> dict:
    """The ``sbatch:`` mapping of an HPC config, checked: option name -> one value."""
    sbatch = values.get("sbatch") or {}
    where = f"{source}: " if source else ""
    if not isinstance(sbatch, dict):
        raise ConfigError(f"{where}sbatch: expected a mapping of sbatch options (e.g. "
                          f"'exclusive: true'), got {type(sbatch).__name__} {sbatch!r:.60}")
    for key, value in sbatch.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}sbatch.{key}: expected one value (a string, number or "
                              f"true), got {type(value).__name__} {value!r:.60}")
    return dict(sbatch)


def hpc_from_args(args) -> HpcConfig:
    """The settings of ``--hpc-config`` overridden by those given on the command line."""
    values = read_yaml(args.hpc_config, "HPC config") if args.hpc_config else {}
    for field in dataclasses.fields(HpcConfig):
        given = getattr(args, field.name, None)
        if given not in (None, []) and field.name != "sbatch":
            values[field.name] = given
    sbatch = _sbatch_options(values, args.hpc_config)
    for item in args.sbatch or []:
        if "=" not in item:
            raise ForgetMIError(f"--sbatch {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        sbatch[key] = True if value.lower() == "true" else value
    values["sbatch"] = sbatch
    if getattr(args, "jobs", None) is not None and values.get("executor", "slurm") != "local":
        raise ForgetMIError(f"--jobs {args.jobs}: tasks side by side on this machine, with "
                            "--executor local (Slurm's cap is --max-parallel)")
    return from_dict(HpcConfig, values, args.hpc_config, what="HPC config")


def single_process(hpc: HpcConfig) -> HpcConfig:
    """``hpc`` for tasks of one process (evaluation, reports): no GPUs, no ranks."""
    return dataclasses.replace(hpc, processes=1, gpus_per_task=0)


def array_ids(hpc: HpcConfig, jobs: list) -> list[str]:
    """The Slurm array ids of submitted ``jobs``, for the next array's ``afterok`` (none when
    the tasks ran here)."""
    if hpc.executor != "slurm":
        return []
    return sorted({job.job_id.split("_")[0] for job in jobs})


def record_jobs(hpc: HpcConfig, entries: list[dict], tasks: list[Task], jobs: list) -> None:
    """Fill each submitted task's manifest entry: its Slurm job and log; when it ran here, its
    log and whether it is done or failed."""
    by_name = {e["name"]: e for e in entries}
    for task, job in zip(tasks, jobs):
        entry = by_name[task.name]
        if hpc.executor == "slurm":
            entry["job_id"] = job.job_id
            entry["log"] = str(job.paths.stdout).replace("%t", "0")
            entry["state"] = "submitted"
        elif isinstance(job, LocalJob):
            entry["log"] = str(job.log)
            entry["state"] = "failed" if job.error else "done"
        else:
            entry["state"] = "done"


def merge_previous(manifest: Path, entries: list[dict]) -> list[dict]:
    """Keep what an earlier submission recorded for runs this one left alone, and the tasks of
    earlier submissions this one did not plan (a random or bayes sweep's earlier trials)."""
    if not manifest.is_file():
        return entries
    previous = {e["name"]: e for e in json.loads(manifest.read_text()).get("tasks", [])}
    merged = []
    for entry in entries:
        old = previous.pop(entry["name"], None)
        # Left alone: done before this submission, with nothing of this one to record.
        skipped = entry.get("state") == "done" and not entry.get("log") and old
        merged.append(old | {"state": "done"} if skipped else entry)
    return list(previous.values()) + merged
