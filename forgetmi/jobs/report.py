"""``forgetmi report RESULTS... [--out DIR]``: the paper-style tables and plots of many evaluated
runs (:mod:`forgetmi.evaluation.report`)."""

from __future__ import annotations

import argparse
import logging

from forgetmi.errors import exit_on_error
from forgetmi.evaluation.report import (closest_to_retrained, find_metrics_files, load_runs,
                                        render_tables, summarise, write_report)

log = logging.getLogger("forgetmi.report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi report",
        description="Aggregate evaluated runs (metrics.json) into tables and plots: mean ± std "
                    "over seeds per forget size and model.")
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="metrics.json files, or folders searched recursively for them")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    return parser


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi report RESULTS... [--out DIR]``: 0 on success, 2 on bad input."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors and --help: return the code, as for bad input
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    if not logging.getLogger("forgetmi").handlers:  # called on its own, not from the CLI
        from forgetmi.utils.logs import setup_logging
        setup_logging(0)
    runs = load_runs(find_metrics_files(args.results))
    summary = summarise(runs)
    written = write_report(runs, args.out, summary)
    log.info("%d runs\n\n%s", len(runs), render_tables(summary))
    for entry in closest_to_retrained(runs):
        log.info("%s", entry["sentence"].replace("**", ""))
    for path in written:
        log.info("wrote %s", path)
    return 0
