"""The things a user runs, each a ``main(argv) -> int`` over library calls.

This table is the one list of jobs: ``forgetmi COMMAND`` dispatches through it, a Slurm task
carries a job's ``module:function`` and imports it when it runs (so :mod:`forgetmi.hpc` knows
no job), and a protocol's jobs name their kind here. Nothing below this package imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Entry:
    """One row of the job table (not to be confused with a protocol's planned job)."""

    target: str        # "module:function", the function taking argv and returning an exit code
    help: str          # one line for `forgetmi --help`

    def resolve(self) -> Callable[[list[str] | None], int]:
        from forgetmi.hpc.run import resolve
        return resolve(self.target)


JOBS: dict[str, Entry] = {
    "train": Entry("forgetmi.jobs.train:main", "train the original model on retain + forget rows"),
    "retrain": Entry("forgetmi.jobs.train:retrain",
                     "train the gold-standard model on retain rows only"),
    "unlearn": Entry("forgetmi.jobs.unlearn:main",
                     "unlearn the forget set from a trained model "
                     "(--original=RUN/model --preset=unimodal ...)"),
    "evaluate": Entry("forgetmi.jobs.evaluate:main",
                      "metrics with CIs, membership attacks and the gap to the retrained model of "
                      "finished runs -> RUN/metrics.json"),
    "report": Entry("forgetmi.jobs.report:main",
                    "the paper-style table (Markdown, CSV, JSON) and plots from many evaluated "
                    "runs"),
    "select": Entry("forgetmi.jobs.select:main",
                    "each method's settings from its evaluated sweep: the eligible trial "
                    "closest to the retrained model -> a presets file"),
    "rankings": Entry("forgetmi.jobs.rankings:main",
                      "each kind of memory's method ranking and the agreement between them "
                      "(Kendall's tau)"),
    "ulira": Entry("forgetmi.jobs.ulira:main",
                   "per-example audit of an unlearned model with shadow pipelines (U-LiRA)"),
    "protocol": Entry("forgetmi.jobs.protocol:main",
                      "run an experimental protocol (sizes × seeds × methods, with dependencies) "
                      "here or as dependent Slurm arrays; --dry-run lists its jobs"),
    "sweep": Entry("forgetmi.jobs.sweep:main",
                   "expand a W&B sweep YAML offline and submit it as one Slurm array (or run it "
                   "here)"),
    "status": Entry("forgetmi.jobs.status:main", "per-task state of a submitted sweep or protocol"),
    "convert-sweep": Entry("forgetmi.jobs.convert_sweep:main",
                           "rewrite the Forget-MI release's sweep file with forgetmi's key names "
                           "(commented: what became what, what was dropped and why)"),
    "forget": Entry("forgetmi.jobs.forget:main",
                    "a patient's request to be forgotten: unlearn, evaluate, purge, audit"),
    "history": Entry("forgetmi.jobs.forget:history_main", "the requests of a forget workspace"),
    "demo": Entry("forgetmi.jobs.demo:main",
                  "run the whole pipeline on the embedded stand-in data"),
}


def run(kind: str, argv: list[str]) -> int:
    """Run the job ``kind`` in this process."""
    if kind not in JOBS:
        raise ValueError(f"unknown job {kind!r}; known: {', '.join(JOBS)}")
    return JOBS[kind].resolve()(list(argv))
