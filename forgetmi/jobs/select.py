"""``forgetmi select SWEEP_DIR... [--write PRESETS.yaml] [--budget 0.10] [--name NAME]``: each
method's settings from its evaluated sweep (:mod:`forgetmi.evaluation.selection`).

Prints, per method, every trial with its score per replicate, mean score and time ratio, the
chosen one marked; with ``--write``, the chosen settings as a presets file (one entry per
method, what a protocol's ``methods`` takes), written atomically. An existing file is replaced
only with ``--force``. Exit 1, writing nothing, when a method has no eligible trial.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from forgetmi.errors import DataError, exit_on_error
from forgetmi.utils.arguments import parse_or_exit_code

log = logging.getLogger("forgetmi.select")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi select",
        description="Each method's settings from its evaluated sweep: of the trials scored on "
                    "every replicate within the time budget, the one closest to the retrained "
                    "model on average.")
    parser.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR",
                        help="sweep folders (forgetmi sweep --out), searched at any depth for "
                             "runs (folders with sweep_params.json): one folder per seed or "
                             "one for all")
    parser.add_argument("--write", metavar="PRESETS.yaml", type=Path,
                        help="write the chosen settings here (configs/presets/tuned.yaml)")
    parser.add_argument("--force", action="store_true",
                        help="replace the --write file when it exists")
    parser.add_argument("--budget", type=float, default=0.10,
                        help="most unlearning time, as a share of the retraining's "
                             "device-seconds, averaged over a trial's replicates (0.10; inf: "
                             "no budget)")
    parser.add_argument("--name", action="append",
                        help="the preset's name for a sweep folder (default: its method "
                             "parameter); once per sweep folder, in their order")
    return parser


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """0 when every method has a chosen trial, 1 when one has none, 2 on bad input."""
    args, code = parse_or_exit_code(build_parser(), argv)
    if args is None:
        return code
    from forgetmi.evaluation.selection import presets_text, render, select
    from forgetmi.utils.atomic import write_text

    if not args.budget > 0:
        raise DataError(f"expected a positive share of the retraining's time, got "
                        f"{args.budget}", field="--budget")
    if args.write is not None and args.write.exists() and not args.force:
        raise DataError("exists; give --force to replace it", args.write)
    selections = select(args.sweeps, args.budget, args.name)
    sys.stdout.write("\n".join(render(s) for s in selections))
    missing = [s for s in selections if s.chosen is None]
    if missing:
        log.error("no eligible trial for %s; nothing written",
                  ", ".join(f"{s.name} ({s.sweep})" for s in missing))
        return 1
    for s in selections:
        log.info("%s: trial %s, mean score %.3f", s.name, s.chosen,
                 s.trials[s.chosen].mean("value"))
    if args.write is not None:
        log.info("wrote %s", write_text(args.write, presets_text(selections, args.budget)))
    return 0
