"""``python -m forgetmi.hpc.run MODULE:FUNCTION ARGS...``: one job of a Slurm task, in its own
process: the job named by the task is imported here, at run time."""

from __future__ import annotations

import importlib
import sys


def resolve(target: str):
    """The function ``module:function`` names (``module`` alone: its ``main``)."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function or "main")


def run(target: str, argv: list[str]) -> int:
    return resolve(target)(argv)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
