"""The benchmark's checks, made by ``forgetmi report``: can the run tell a model that remembers
its forget rows from one that never saw them, and does it reproduce the recorded figures?

    python benchmarks/benchmark_signal.py runs/benchmark [--recorded benchmarks/benchmark-figures.json]
                                                         [--record FILE]

It only calls ``forgetmi report RUNS --out RUNS/report --check [--record F] [--recorded F]``
(the same command, typed by hand, does the same): the checks live in
``forgetmi/evaluation/signal.py``, the verdicts in ``forgetmi/evaluation/verdicts.py``. Exit
status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from forgetmi.jobs.report import main


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        sys.stderr.write(__doc__)
        return 2
    runs = argv.pop(0)
    return main([runs, "--out", str(Path(runs) / "report"), "--check", *argv])


if __name__ == "__main__":
    sys.exit(run())
