"""``forgetmi sweep FILE --out DIR``: a W&B sweep expanded offline and run as one Slurm array.

Each proposed run is a task of the array; with ``--retrained`` (or the release's
``retrained_model_path``, or an ``evaluate.retrained`` parameter) every run scores itself
against its retrained model when it ends (``metrics.json`` and its W&B summary: what a bayes
sweep optimises), a second array evaluates any run not yet scored, then one task gathers the
sweep's report into ``OUT/report``, each held by Slurm until the one before has succeeded
(``afterok``). Runs already finished are left out, so resubmitting the
sweep only runs what is missing; ``sweep.json`` records every task for ``forgetmi status``.
``--executor local --jobs N`` runs the tasks here, N at a time, each with its log in
``OUT/slurm/``; ``--dry-run`` lists the runs and writes nothing. Every run of a sweep is one W&B
group (``tracking.group``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from forgetmi.config import ConfigError, resolve_run_path
from forgetmi.errors import exit_on_error
from forgetmi.hpc.executor import HpcConfig, require_executor, submit_array
from forgetmi.hpc.local import failures, raise_failures
from forgetmi.hpc.submit import (add_hpc_arguments, array_ids, hpc_from_args, merge_previous,
                                 record_jobs, single_process)
from forgetmi.hpc.tasks import Task
from forgetmi.jobs import JOBS
from forgetmi.utils.atomic import write_json
from forgetmi.utils.run_folder import RunFolder
from forgetmi.utils.tracking import group_for

logger = logging.getLogger("forgetmi.hpc")


def plan_sweep(sweep_file: str | Path, out: str | Path, count: int | None, extra: list[str],
               proposal_seed: int | None = None, retrained: str | None = None):
    """The sweep and its runs, each run's config built (so checked) and told its W&B group;
    nothing is written."""
    from forgetmi.hpc.sweep import expand, load_sweep

    sweep = load_sweep(sweep_file)
    # Every run of this sweep is one W&B group, unless the file or the command line says.
    group = ([f"--tracking.group={group_for(f'sweep-{sweep.path.stem}', out)}"]
             if sweep.kind in ("train", "unlearn") else [])
    if retrained is not None and sweep.kind == "unlearn":  # each trial scores itself
        extra = [*extra, f"--evaluate.retrained={retrained}"]
    return sweep, expand(sweep, Path(out), count, extra, proposal_seed, defaults=group)


def submit_sweep(sweep_file: str | Path, out: str | Path, hpc: HpcConfig, count: int | None,
                 extra: list[str], retrained: str | None = None,
                 proposal_seed: int | None = None) -> dict:
    """Submit the sweep's runs as one array; with ``retrained`` (a run folder, may use
    {seed}/{size}/{forget_set}) also an array evaluating every run against it, then a task
    gathering the sweep's report into ``out/report`` — each held until the one before succeeds.
    Tasks run here (``--executor local``) are recorded with their logs before a failure is
    raised."""
    require_executor(hpc)  # before any folder is made
    out = Path(out)
    sweep, runs = plan_sweep(sweep_file, out, count, extra, proposal_seed, retrained)
    tasks, entries = [], []
    for run in runs:
        write_json(run.output_dir / "sweep_params.json", run.params)
        entry = {"name": run.run_id, "kind": sweep.kind, "output_dir": str(run.output_dir),
                 "params": run.params, "job_id": None, "log": None}
        if RunFolder(run.output_dir).finished(sweep.kind):
            entry["state"] = "done"
            logger.info("run %s already finished; not resubmitted", run.run_id)
        else:
            tasks.append(Task(run.run_id, JOBS[sweep.kind].target, run.argv, str(run.output_dir),
                              hpc.accelerate_config))
        entries.append(entry)
    jobs = submit_array(hpc, tasks, out / "slurm", f"sweep-{sweep.path.stem}")
    record_jobs(hpc, entries, tasks, jobs)
    failed, total = failures(jobs), len(tasks)
    # As on Slurm (afterok), a failed run holds back the arrays after it.
    if not failed and (retrained is not None or any(_reference(run) for run in runs)):
        more, failed, total = _evaluate_and_report(sweep, runs, out, hpc, retrained, jobs)
        entries += more
    manifest = {"kind": "sweep", "sweep": str(Path(sweep_file).resolve()),
                "executor": hpc.executor, "tasks": merge_previous(out / "sweep.json", entries)}
    write_json(out / "sweep.json", manifest)
    raise_failures(failed, total)
    return manifest


def dry_run(sweep_file: str | Path, out: str | Path, count: int | None, extra: list[str],
            retrained: str | None = None, proposal_seed: int | None = None) -> list[dict]:
    """What ``submit_sweep`` would run, logged one run a line; nothing is written."""
    sweep, runs = plan_sweep(sweep_file, out, count, extra, proposal_seed, retrained)
    planned = [{"name": run.run_id, "params": run.params, "output_dir": str(run.output_dir),
                "finished": RunFolder(run.output_dir).finished(sweep.kind)} for run in runs]
    for run in planned:
        logger.info("%s  %-8s %s  %s", run["name"], "finished" if run["finished"] else "to run",
                    run["output_dir"], json.dumps(run["params"], sort_keys=True, default=str))
    todo = sum(not run["finished"] for run in planned)
    logger.info("dry run: %d %s run(s), %d to run, %d finished; nothing written%s", len(planned),
                sweep.kind, todo, len(planned) - todo,
                "; then each is scored and the report gathered into "
                f"{Path(out) / 'report'}" if retrained or any(_reference(r) for r in runs)
                else "")
    return planned


def _reference(run) -> str | None:
    """The run's own retrained reference: the release's retrained_model_path, or the sweep's
    ``evaluate.retrained`` parameter (already resolved in the run's config)."""
    if run.retrained:
        return run.retrained
    return getattr(getattr(run.config, "evaluate", None), "retrained", None)


def _scores_itself(sweep, run) -> bool:
    """An unlearning run with a reference evaluates itself when it ends (``evaluate.retrained``);
    only one that finished unscored (its scoring failed) needs an evaluation task."""
    return sweep.kind == "unlearn" and _reference(run) is not None


def _evaluate_and_report(sweep, runs, out: Path, hpc: HpcConfig, retrained: str | None,
                         jobs: list) -> tuple[list[dict], list, int]:
    """``retrained`` (from --retrained) wins over each run's own reference (the release's
    retrained_model_path); runs with neither are scored without the gap. Returns the entries,
    the tasks that failed here and how many the failing array held."""
    single = single_process(hpc)
    tasks, entries = [], []
    for run in runs:
        folder = RunFolder(run.output_dir)
        if _scores_itself(sweep, run) and (not folder.finished(sweep.kind)
                                           or folder.finished("evaluate")):
            continue  # it is (or was) evaluated when it ended, by itself
        template = retrained if retrained is not None else _reference(run)
        reference = (resolve_run_path(template, run.config) if run.config and template
                     else template)
        name = f"evaluate/{run.run_id}"
        entry = {"name": name, "kind": "evaluate", "output_dir": str(run.output_dir),
                 "retrained": reference, "job_id": None, "log": None}
        if RunFolder(run.output_dir).finished("evaluate"):
            entry["state"] = "done"
        else:
            against = ["--retrained", reference] if reference else []
            tasks.append(Task(name, JOBS["evaluate"].target, [str(run.output_dir), *against],
                              str(run.output_dir)))
        entries.append(entry)
    evaluated = submit_array(single, tasks, out / "slurm", f"sweep-{sweep.path.stem}-evaluate",
                             after=array_ids(hpc, jobs) or None)
    record_jobs(single, entries, tasks, evaluated)
    if failures(evaluated):
        return entries, failures(evaluated), len(tasks)
    report = Task("report", JOBS["report"].target,
                  [str(out / "runs"), "--out", str(out / "report")], str(out / "report"))
    gathered = submit_array(single, [report], out / "slurm", f"sweep-{sweep.path.stem}-report",
                            after=array_ids(hpc, evaluated) + array_ids(hpc, jobs) or None)
    entry = {"name": "report", "kind": "report", "output_dir": str(out / "report"),
             "job_id": None, "log": None}
    record_jobs(single, [entry], [report], gathered)
    return entries + [entry], failures(gathered), 1


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi sweep FILE --out DIR [--dry-run] --executor slurm|local|debug [--jobs N] [...]
    [--key=value ...]``."""
    parser = argparse.ArgumentParser(prog="forgetmi sweep", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="W&B sweep YAML (configs/sweeps/*.yaml)")
    parser.add_argument("--out", required=True, help="the sweep's folder (runs/, slurm/ logs)")
    parser.add_argument("--count", type=int, help="new trials to propose (random / bayes sweeps; each runs at every seed "
                             "and forget set listed); trials already in OUT that have not "
                             "finished are run again first; 0: only those")
    parser.add_argument("--proposal-seed", type=int,
                        help="seed of the random / bayes proposals: the same seed proposes the "
                             "same runs")
    parser.add_argument("--retrained", help="evaluate every run against this retrained run "
                                            "(may use {seed}, {size}, {forget_set}) and gather "
                                            "the sweep's report into OUT/report")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs (id, finished or not, folder, parameters); write "
                             "nothing")
    add_hpc_arguments(parser)
    args, extra = parser.parse_known_args(argv)
    if args.count is not None and args.count < 0:
        raise ConfigError(f"--count {args.count}: expected the number of new trials (0 or more; "
                          "0 runs only the unfinished trials already in --out)")
    hpc = hpc_from_args(args)  # checked in a dry run too: it says what a submission would
    if args.dry_run:
        if args.executor:
            require_executor(hpc)
        dry_run(args.file, args.out, args.count, extra, args.retrained, args.proposal_seed)
        return 0
    manifest = submit_sweep(args.file, args.out, hpc, args.count, extra,
                            args.retrained, args.proposal_seed)
    logger.info("%d run(s); `forgetmi status %s` shows their state", len(manifest["tasks"]),
                args.out)
    return 0
