"""``forgetmi rankings KIND=RESULTS... [--out DIR]``: the methods' ranking under each kind of
memory and the agreement between them (:mod:`forgetmi.evaluation.rankings`).

Each ``KIND=RESULTS`` names one benchmark's evaluated runs (a protocol's output folder, as
``forgetmi report`` takes it), e.g. ``label=runs/evidence/label``, or the ``report.json``
that ``forgetmi report`` wrote for them (which keeps each run's gaps and the verdicts), so a
kind's results can be kept as one small file. Prints the rankings and
Kendall's τ; with ``--out``, writes ``rankings.md`` and ``rankings.json`` there.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from forgetmi.errors import DataError, exit_on_error
from forgetmi.utils.arguments import parse_or_exit_code

log = logging.getLogger("forgetmi.rankings")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="forgetmi rankings",
        description="Rank the unlearning methods by closeness to the retrained model under "
                    "each kind of memory, and measure how far the rankings agree (Kendall's τ).")
    parser.add_argument("kinds", nargs="+", metavar="KIND=RESULTS",
                        help="a name and a folder of evaluated runs (metrics.json), or the "
                             "report.json `forgetmi report` made of them; at least two")
    parser.add_argument("--out", type=Path, help="write rankings.md and rankings.json here")
    parser.add_argument("--force", action="store_true",
                        help="replace files in --out an earlier ranking did not write")
    return parser


def _pairs(items: list[str]) -> list[tuple[str, Path]]:
    pairs = []
    for item in items:
        kind, sep, folder = item.partition("=")
        if not sep or not kind or not folder:
            raise DataError(f"expected KIND=RESULTS (e.g. label=runs/evidence/label), got "
                            f"{item!r}", field="KIND=RESULTS")
        if not (Path(folder).is_dir() or Path(folder).name == "report.json"
                and Path(folder).is_file()):
            raise DataError("not a folder of evaluated runs, nor a report.json", folder)
        pairs.append((kind, Path(folder)))
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names) or len(names) < 2:
        raise DataError(f"expected at least two kinds, each named once; got {', '.join(names)}",
                        field="KIND=RESULTS")
    return pairs


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    """0 on success, 2 on bad input."""
    args, code = parse_or_exit_code(build_parser(), argv)
    if args is None:
        return code
    from forgetmi.evaluation.rankings import (agreement, json_document, rank_kind, rank_report,
                                              render_markdown)
    from forgetmi.evaluation.report import find_metrics_files, load_runs
    from forgetmi.evaluation.trials import read_json
    from forgetmi.utils.atomic import refuse_to_replace, write_json, write_text, written_json

    pairs = _pairs(args.kinds)
    if args.out is not None:  # before anything is read or written: only an earlier ranking's
        # own files are replaced without --force
        earlier = written_json(args.out / "rankings.json", ("rankings", "kendall"))
        refuse_to_replace([args.out / n for n in ("rankings.md", "rankings.json")],
                          args.force or earlier)
    rankings = []
    for kind, source in pairs:
        if source.is_file():
            rankings += rank_report(kind, read_json(source), source)
            continue
        runs = load_runs(find_metrics_files([source]))
        if not runs:
            raise DataError("holds no evaluated runs (metrics.json)", source)
        rankings += rank_kind(kind, runs)
    taus = agreement(rankings)
    markdown = render_markdown(rankings, taus)
    sys.stdout.write(markdown)
    if args.out is not None:
        log.info("wrote %s", write_text(args.out / "rankings.md", markdown))
        log.info("wrote %s", write_json(args.out / "rankings.json", json_document(rankings, taus)))
    return 0
