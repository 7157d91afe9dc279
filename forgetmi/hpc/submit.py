"""``forgetmi sweep`` and ``forgetmi protocol --executor slurm``: from a file to Slurm arrays.

A sweep is one array. A protocol is a pipeline of arrays, each held by Slurm until the one it
needs has succeeded (``afterok``): models → unlearning → evaluation → report. Runs already
finished are left out, so resubmitting a sweep or a pipeline after a failure or a pre-emption
only runs what is missing. Every submission writes a manifest (``sweep.json`` /
``pipeline.json``) that ``forgetmi status`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import yaml

from forgetmi.errors import ForgetMIError
from forgetmi.hpc.executor import EXECUTORS, HpcConfig, submit_array
from forgetmi.hpc.tasks import Task
from forgetmi.utils.atomic import write_json

logger = logging.getLogger("forgetmi.hpc")


# -- the HPC settings on the command line ----------------------------------------------------------

def add_hpc_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("where tasks run (also from --hpc-config YAML)")
    g.add_argument("--hpc-config", help="YAML with HpcConfig fields (configs/hpc/*.yaml)")
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
    g.add_argument("--max-parallel", type=int, help="array tasks running at once")
    g.add_argument("--accelerate-config", help="configs/accelerate/*.yaml for multi-rank tasks")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch option, repeatable (e.g. --sbatch exclusive=true)")


def hpc_from_args(args) -> HpcConfig:
    values: dict = {}
    if args.hpc_config:
        path = Path(args.hpc_config)
        if not path.is_file():
            raise ForgetMIError(f"{path}: HPC config not found")
        values = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in dataclasses.fields(HpcConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ForgetMIError(f"{path}: unknown key(s) {', '.join(unknown)}; known: "
                                f"{', '.join(sorted(known))}")
    for field in dataclasses.fields(HpcConfig):
        given = getattr(args, field.name, None)
        if given not in (None, []):
            values[field.name] = given
    sbatch = dict(values.get("sbatch") or {})
    for item in args.sbatch or []:
        if "=" not in item:
            raise ForgetMIError(f"--sbatch {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        sbatch[key] = True if value.lower() == "true" else value
    values["sbatch"] = sbatch
    return HpcConfig(**values)


# -- sweeps ------------------------------------------------------------------------------------------

def submit_sweep(sweep_file: str | Path, out: str | Path, hpc: HpcConfig, count: int | None,
                 extra: list[str], retrained: str | None = None,
                 proposal_seed: int | None = None) -> dict:
    """Submit the sweep's runs as one array; with ``retrained`` (a run folder, may use
    {seed}/{size}/{forget_set}) also an array evaluating every run against it, then a task
    gathering the sweep's report into ``out/report`` — each held until the one before succeeds."""
    from forgetmi.hpc.sweep import expand, load_sweep

    out = Path(out)
    sweep = load_sweep(sweep_file)
    runs = expand(sweep, out, count, extra, proposal_seed)
    tasks, entries = [], []
    for run in runs:
        write_json(run.output_dir / "sweep_params.json", run.params)
        entry = {"name": run.run_id, "kind": sweep.kind, "output_dir": str(run.output_dir),
                 "params": run.params, "job_id": None, "log": None}
        if _finished(sweep.kind, run.output_dir):
            entry["state"] = "done"
            logger.info("run %s already finished; not resubmitted", run.run_id)
        else:
            tasks.append(Task(run.run_id, sweep.kind, run.argv, str(run.output_dir),
                              hpc.accelerate_config))
        entries.append(entry)
    jobs = submit_array(hpc, tasks, out / "slurm", f"sweep-{sweep.path.stem}")
    _record_jobs(hpc, entries, tasks, jobs)
    if retrained is not None or any(run.retrained for run in runs):
        entries += _evaluate_and_report(sweep, runs, out, hpc, retrained, jobs)
    manifest = {"kind": "sweep", "sweep": str(Path(sweep_file).resolve()),
                "executor": hpc.executor, "tasks": _merge_previous(out / "sweep.json", entries)}
    write_json(out / "sweep.json", manifest)
    return manifest


def _evaluate_and_report(sweep, runs, out: Path, hpc: HpcConfig, retrained: str | None,
                         jobs: list) -> list[dict]:
    """``retrained`` (from --retrained) wins over each run's own reference (the release's
    retrained_model_path); runs with neither are scored without the gap."""
    from forgetmi.unlearn import resolve_run_path

    single = dataclasses.replace(hpc, processes=1, gpus_per_task=0)
    after = sorted({j.job_id.split("_")[0] for j in jobs}) if hpc.executor == "slurm" else []
    tasks, entries = [], []
    for run in runs:
        template = retrained if retrained is not None else run.retrained
        reference = (resolve_run_path(template, run.config) if run.config and template
                     else template)
        name = f"evaluate/{run.run_id}"
        entry = {"name": name, "kind": "evaluate", "output_dir": str(run.output_dir),
                 "retrained": reference, "job_id": None, "log": None}
        if (run.output_dir / "metrics.json").is_file():
            entry["state"] = "done"
        else:
            against = ["--retrained", reference] if reference else []
            tasks.append(Task(name, "evaluate", [str(run.output_dir), *against],
                              str(run.output_dir)))
        entries.append(entry)
    evaluated = submit_array(single, tasks, out / "slurm", f"sweep-{sweep.path.stem}-evaluate",
                             after=after or None)
    _record_jobs(single, entries, tasks, evaluated)
    report = Task("report", "report", [str(out / "runs"), "--out", str(out / "report")],
                  str(out / "report"))
    after = sorted({j.job_id.split("_")[0] for j in evaluated}) if hpc.executor == "slurm" else []
    gathered = submit_array(single, [report], out / "slurm", f"sweep-{sweep.path.stem}-report",
                            after=after or None)
    entry = {"name": "report", "kind": "report", "output_dir": str(out / "report"),
             "job_id": None, "log": None}
    _record_jobs(single, [entry], [report], gathered)
    return entries + [entry]


def _finished(kind: str, folder: Path) -> bool:
    if kind == "evaluate":
        return (folder / "metrics.json").is_file()
    timing = folder / "timing.json"
    return timing.is_file() and json.loads(timing.read_text()).get("job") in (
        "train", "retrain", "unlearn")


def _record_jobs(hpc: HpcConfig, entries: list[dict], tasks: list[Task], jobs: list) -> None:
    by_name = {e["name"]: e for e in entries}
    for task, job in zip(tasks, jobs):
        entry = by_name[task.name]
        if hpc.executor == "slurm":
            entry["job_id"] = job.job_id
            entry["log"] = str(job.paths.stdout).replace("%t", "0")
            entry["state"] = "submitted"
        else:
            entry["state"] = "done"


def _merge_previous(manifest: Path, entries: list[dict]) -> list[dict]:
    """Keep what an earlier submission recorded for runs this one left alone."""
    if not manifest.is_file():
        return entries
    previous = {e["name"]: e for e in json.loads(manifest.read_text()).get("tasks", [])}
    merged = []
    for entry in entries:
        old = previous.get(entry["name"])
        merged.append(old | {"state": "done"} if entry.get("state") == "done" and old else entry)
    return merged


# -- protocols as dependent arrays ----------------------------------------------------------------------

def submit_protocol(protocol_file: str | Path, hpc: HpcConfig, extra: list[str]) -> dict:
    from forgetmi.protocol import expand, load_protocol

    protocol = load_protocol(protocol_file)
    jobs = expand(protocol, extra)
    out = Path(protocol.output_dir)
    entries, previous_ids = [], []
    for stage in sorted({j.stage for j in jobs}):
        todo = [j for j in jobs if j.stage == stage and not j.done()]
        tasks = [Task(j.name, j.kind, j.argv, str(j.output_dir),
                      hpc.accelerate_config if j.kind in ("train", "retrain", "unlearn") else None)
                 for j in todo]
        stage_hpc = hpc if stage < 2 else dataclasses.replace(hpc, processes=1, gpus_per_task=0)
        submitted = submit_array(stage_hpc, tasks, out / "slurm", f"{Path(protocol_file).stem}-"
                                 f"stage{stage}", after=previous_ids or None)
        stage_entries = [{"name": j.name, "kind": j.kind, "output_dir": str(j.output_dir),
                          "stage": stage, "job_id": None, "log": None,
                          "state": "done" if j.done() else None}
                         for j in jobs if j.stage == stage]
        _record_jobs(stage_hpc, stage_entries, tasks, submitted)
        entries += stage_entries
        if hpc.executor == "slurm" and submitted:
            previous_ids = sorted({job.job_id.split("_")[0] for job in submitted})
    manifest = {"kind": "pipeline", "protocol": str(Path(protocol_file).resolve()),
                "executor": hpc.executor, "tasks": entries}
    write_json(out / "pipeline.json", manifest)
    return manifest


# -- command lines -------------------------------------------------------------------------------------

def sweep_main(argv: list[str] | None = None) -> int:
    """``forgetmi sweep FILE --out DIR --executor slurm|local|debug [...] [--key=value ...]``."""
    parser = argparse.ArgumentParser(prog="forgetmi sweep", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="W&B sweep YAML (configs/sweeps/*.yaml)")
    parser.add_argument("--out", required=True, help="the sweep's folder (runs/, slurm/ logs)")
    parser.add_argument("--count", type=int, help="runs to propose (random / bayes sweeps)")
    parser.add_argument("--proposal-seed", type=int,
                        help="seed of the random / bayes proposals: the same seed proposes the "
                             "same runs")
    parser.add_argument("--retrained", help="evaluate every run against this retrained run "
                                            "(may use {seed}, {size}, {forget_set}) and gather "
                                            "the sweep's report into OUT/report")
    add_hpc_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    try:
        manifest = submit_sweep(args.file, args.out, hpc_from_args(args), args.count, extra,
                                args.retrained, args.proposal_seed)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2
    logger.info("%d run(s); `forgetmi status %s` shows their state", len(manifest["tasks"]),
                args.out)
    return 0


def protocol_submit_main(args, extra: list[str]) -> int:
    from forgetmi.protocol import ensure_stand_in, load_protocol
    try:
        ensure_stand_in(load_protocol(args.file), extra)  # once, here, before any task starts
        manifest = submit_protocol(args.file, hpc_from_args(args), extra)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2
    logger.info("%d job(s) in %s; `forgetmi status` on the protocol's output folder shows them",
                len(manifest["tasks"]), manifest["protocol"])
    return 0
