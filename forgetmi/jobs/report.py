"""``forgetmi report RESULTS... [--out DIR]``: the paper-style tables and plots of many evaluated
runs (:mod:`forgetmi.evaluation.report`); a sweep's runs, one row per trial, also against the
swept parameters (:mod:`forgetmi.evaluation.by_parameter`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from forgetmi.errors import DataError, exit_on_error
from forgetmi.utils.arguments import parse_or_exit_code
from forgetmi.evaluation import by_parameter
from forgetmi.evaluation.report import (closest_to_retrained, find_metrics_files, load_runs,
                                        margins_by_size, render_tables, summarise, sweep_table,
                                        verdicts, write_report)

log = logging.getLogger("forgetmi.report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi report",
        description="Aggregate evaluated runs (metrics.json) into tables and plots: mean ± std "
                    "over seeds per forget size and model.")
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="metrics.json files, or folders searched recursively for them")
    parser.add_argument("--out", default="report", help="output folder (default: report/)")
    parser.add_argument("--margins", default="auto",
                        help="equivalence margins of the verdicts: 'auto' (from the retrained "
                             "runs' spread over seeds where a size has at least 3, else no "
                             "verdict), 'seeds' (the same, refusing too few seeds), "
                             "'attack=A,test=T', or a file --write-margins wrote")
    parser.add_argument("--record", metavar="FILE",
                        help="write every model's attack and test AUC per seed (JSON), for a "
                             "later --recorded check")
    parser.add_argument("--recorded", metavar="FILE",
                        help="check that these runs reproduce figures a --record wrote (each "
                             "mean within twice the recorded std over seeds); exit 1 if not")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a signal check fails (the original is not told apart "
                             "from the retrained model, or the retrained model's interval "
                             "misses 0.5)")
    parser.add_argument("--force", action="store_true",
                        help="replace files in --out (or --record, --write-margins) that an "
                             "earlier report did not write")
    parser.add_argument("--write-margins", metavar="FILE",
                        help="write the margins measured here (one forget size, or the "
                             "largest) as YAML, for reports of fewer seeds (e.g. the demo's)")
    return parser


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """``forgetmi report RESULTS... [--out DIR]``: 0 on success, 2 on bad input."""
    args, code = parse_or_exit_code(build_parser(), argv)
    if args is None:
        return code
    if not logging.getLogger("forgetmi").handlers:  # called on its own, not from the CLI
        from forgetmi.utils.logs import setup_logging
        setup_logging(0)
    import json

    from forgetmi.evaluation.signal import figures, render, reproduction_checks, signal_checks
    from forgetmi.evaluation.verdicts import parse_margins
    from forgetmi.utils.atomic import write_json

    _refuse_others_files(args)
    runs = load_runs(find_metrics_files(args.results))
    recorded = None
    if args.recorded:  # read before anything is written
        try:
            recorded = json.loads(open(args.recorded, encoding="utf-8").read())
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read recorded figures: {err}", args.recorded) from None
    given = None if args.margins in ("auto", "seeds") else parse_margins(args.margins)
    judged = verdicts(runs, given, require=args.margins == "seeds")
    if args.write_margins and not any(v["margins"] for v in judged):
        raise DataError("no forget size has margins to write (too few retrained seeds); "
                        "nothing written", args.write_margins)
    summary = summarise(runs)
    written = write_report(runs, args.out, summary, judged)
    if args.write_margins:
        written.append(_write_margins(judged, args.write_margins))
    # The tables are the command's output, not a log: on stdout, without timestamps, so
    # `report ... | grep` sees them and -q does not hide them.
    sys.stdout.write(f"{len(runs)} runs\n\n{render_tables(summary)}\n")
    swept = sweep_table(runs)
    if swept is not None:
        sys.stdout.write(f"\n{by_parameter.render_markdown(*swept)}\n")
    sys.stdout.flush()
    for entry in judged:
        for sentence in entry["sentences"]:
            log.info("%s", sentence.replace("**", ""))
    for entry in closest_to_retrained(runs, margins_by_size(judged)):
        log.info("%s", entry["sentence"].replace("**", ""))
    if args.record:
        written.append(write_json(args.record, figures(runs)))
    checks = signal_checks(runs)
    if recorded is not None:
        checks += reproduction_checks(runs, recorded, args.recorded)
    for line in render(checks):
        log.info("%s", line[2:])
    for path in written:
        log.info("wrote %s", path)
    failed = [c for c in checks if not c["ok"]]
    if failed and (args.check or recorded is not None):
        log.error("%d of %d check(s) failed", len(failed), len(checks))
        return 1
    return 0


# Every file a report may write into --out.
REPORT_FILES = ("report.md", "report.csv", "report.json", "by_parameter.csv", "tradeoff.png",
                "sizes.png", "mia_roc.png", "by_parameter.png")


def _refuse_others_files(args) -> None:
    """Before anything is read or written: the report's files may replace an earlier report's
    (a rerun: report.json there is one), nothing else without --force."""
    from forgetmi.utils.atomic import refuse_to_replace, written_json

    out = Path(args.out)
    earlier = written_json(out / "report.json", ("schema", "headline", "runs"))
    refuse_to_replace([out / name for name in REPORT_FILES], args.force or earlier)
    refuse_to_replace([p for p in (args.record, args.write_margins) if p], args.force)



def _write_margins(judged: list[dict], path: str):
    """The margins of the largest forget size that has them, as a margins file."""
    import yaml

    from forgetmi.utils.atomic import write_text

    chosen = [v for v in judged if v["margins"]][-1]
    doc = {**chosen["margins"], "forget_set": chosen["size"]}
    return write_text(path, "# Equivalence margins measured by forgetmi report\n"
                      + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
