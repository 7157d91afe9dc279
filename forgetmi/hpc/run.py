"""``python -m forgetmi.hpc.run KIND ARGS...``: one job of a Slurm task, in its own process."""

from __future__ import annotations

import sys

from forgetmi.hpc.tasks import run_entry

if __name__ == "__main__":
    sys.exit(run_entry(sys.argv[1], sys.argv[2:]))
