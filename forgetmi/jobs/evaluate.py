"""``forgetmi evaluate RUN_DIR...``: score finished runs (:mod:`forgetmi.evaluation.evaluate`)
into each run's ``metrics.json``; a run that cannot be scored does not stop the others."""

from __future__ import annotations

import argparse
import logging

from forgetmi.errors import ForgetMIError
from forgetmi.evaluation.evaluate import evaluate_run

logger = logging.getLogger("forgetmi.evaluation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi evaluate",
                                     description="score finished runs into their metrics.json")
    parser.add_argument("runs", nargs="+", help="finished run folders (each with model/), or "
                                                "model folders (e.g. an imported checkpoint)")
    parser.add_argument("--retrained", help="the retrained reference's run folder (for the gap "
                                            "and the logit similarity)")
    parser.add_argument("--references", nargs="+", default=[],
                        help="retrained runs (several seeds) that calibrate the per-example "
                             "attack: each row's loss minus their mean loss on it; those of the "
                             "judged run's own seed are left out")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--config", help="experiment YAML giving the data of model folders "
                                         "(run folders use their own config.yaml)")
    parser.add_argument("--out", help="folder for metrics.json (one run only; default: the "
                                      "run's folder): e.g. a shared original scored at one "
                                      "forget size, --forget_set=X")
    args, overrides = parser.parse_known_args(argv)
    if args.out and len(args.runs) > 1:
        parser.error("--out takes one run (each run's metrics.json would overwrite the last)")
    unknown = [o for o in overrides if not o.startswith("--") or "=" not in o]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides are --key=value)")
    failed = []
    for run in args.runs:  # one run that cannot be scored does not stop the others
        try:
            evaluate_run(run, args.retrained, args.bootstrap, args.batch_size,
                         config=args.config, overrides=overrides, references=args.references,
                         out=args.out)
        except (ForgetMIError, ValueError) as err:
            logger.error("%s", err)
            failed.append(str(run))
    if failed:
        if len(args.runs) > 1:  # one run's error already said it all
            logger.error("%d of %d run(s) not evaluated: %s", len(failed), len(args.runs),
                         ", ".join(failed))
        return 2
    return 0
