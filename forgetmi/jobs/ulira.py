"""``forgetmi ulira``: the per-example unlearning audit with shadow pipelines (U-LiRA).

The shadows' selection and the scoring are library code (:mod:`forgetmi.evaluation.ulira`);
this job trains and unlearns each shadow as the audited run was (here, or as one Slurm array
with the scoring held until every shadow has succeeded).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from forgetmi.config import ExperimentConfig, load_config
from forgetmi.errors import exit_on_error
from forgetmi.evaluation.ulira import Shadow, collect, prepare_shadows

VERDICT_SHADOWS = 32  # 16 statistics a side per row; fewer leave each row's Gaussian fits noisy
from forgetmi.hpc.executor import submit_array
from forgetmi.hpc.submit import (add_hpc_arguments, array_ids, hpc_from_args,
                                 require_executor_flag, single_process)
from forgetmi.hpc.tasks import Task
from forgetmi.jobs import JOBS
from forgetmi.jobs.train import run_training
from forgetmi.jobs.unlearn import run_unlearning

logger = logging.getLogger("forgetmi.evaluation")


def run_shadow(shadow: Shadow) -> None:
    """Train the shadow's original and unlearn its forget patients (skipped when done)."""
    if shadow.done():
        logger.info("shadow %d already finished", shadow.index)
        return
    run_training(shadow.train, "train")
    run_unlearning(shadow.unlearn)


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi ulira --config UNLEARN_RUN/config.yaml --train-config ORIGINAL_RUN/config.yaml
    --target UNLEARN_RUN/model [--shadows 32] --out DIR [--executor slurm ...] [--key=value ...]``.

    Without ``--executor`` every shadow runs here, then the scoring. With it, the shadows are
    one array (each task ``--only K``) and the scoring a task held until they all succeed.
    """
    parser = argparse.ArgumentParser(prog="forgetmi ulira", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="the audited unlearning run's config.yaml (method and settings)")
    parser.add_argument("--train-config", required=True,
                        help="the original model's config.yaml (how the shadows are trained)")
    parser.add_argument("--target", required=True, help="the audited unlearned model folder")
    parser.add_argument("--shadows", type=int, default=32,
                        help="even number of shadow pipelines (32: what a per-example verdict "
                             "needs; fewer are for a first look)")
    parser.add_argument("--out", required=True, help="folder for the shadows and ulira.json")
    parser.add_argument("--only", type=int, help="run one shadow (an array task) and stop")
    parser.add_argument("--collect-only", action="store_true",
                        help="score finished shadows without running any")
    add_hpc_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    require_executor_flag(args)  # without --executor the shadows run here: they would be ignored
    cfg = load_config(ExperimentConfig, args.config, overrides)
    train_cfg = load_config(ExperimentConfig, args.train_config)
    if args.shadows < VERDICT_SHADOWS:
        logger.warning("%d shadows: each row's fit has %d statistics a side, too few for a "
                       "per-example verdict (use at least %d)", args.shadows, args.shadows // 2,
                       VERDICT_SHADOWS)
    shadows = prepare_shadows(cfg, train_cfg, args.shadows, args.out, args.target)
    if args.executor:
        return _submit(args, argv if argv is not None else [], shadows)
    if not args.collect_only:
        for shadow in shadows:
            if args.only is None or shadow.index == args.only:
                run_shadow(shadow)
    if args.only is None:
        collect(cfg, shadows, args.target, args.out)
    return 0


def _submit(args, argv: list[str], shadows: list[Shadow]) -> int:
    """The shadows as one array, the scoring after them (``afterok``)."""
    hpc = hpc_from_args(args)
    # The tasks get this command line less the executor settings.
    keep, skip = [], False
    hpc_flags = {a.option_strings[0] for a in _hpc_actions()}
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in hpc_flags:
            skip = "=" not in item
            continue
        keep.append(item)
    todo = [s for s in shadows if not s.done()]
    target = JOBS["ulira"].target
    tasks = [Task(f"shadow-{s.index}", target, [*keep, "--only", str(s.index)],
                  str(s.folder), hpc.accelerate_config) for s in todo]
    out = Path(args.out)
    jobs = submit_array(hpc, tasks, out / "slurm", "ulira-shadows")
    submit_array(single_process(hpc), [Task("ulira-collect", target, [*keep, "--collect-only"],
                                            str(out))],
                 out / "slurm", "ulira-collect", after=array_ids(hpc, jobs) or None)
    logger.info("%d shadow(s) submitted (%d already finished), scoring after them",
                len(tasks), len(shadows) - len(tasks))
    return 0


def _hpc_actions():
    parser = argparse.ArgumentParser(add_help=False)
    add_hpc_arguments(parser)
    return [a for a in parser._actions if a.option_strings]
