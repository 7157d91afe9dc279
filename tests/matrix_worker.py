"""Every job the package trains with, one after another in one process group.

Run by tests/test_launch_matrix.py under ``accelerate launch --config_file <shipped config>``:
train, retrain, then each registered unlearning method starting from the trained model, all
with the same overrides. The jobs run in-process (not through ``run_job``, which ends the
process group after one job); each leaves its run folder for the test to inspect.

    python tests/matrix_worker.py DATA_ROOT OUT [--key=value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.engine.distributed import finish
    from forgetmi.jobs.train import run_training
    from forgetmi.jobs.unlearn import run_unlearning
    from forgetmi.unlearning import METHODS
    from forgetmi.utils.logs import setup_logging

    root, out, *overrides = argv
    out = Path(out)
    setup_logging()
    accelerator = None
    for job in ["train", "retrain", *sorted(METHODS)]:
        args = [f"--data.root={root}", f"--output_dir={out / job}", *overrides]
        if job in METHODS:
            args += [f"--method={job}", f"--original={out / 'train' / 'model'}"]
        cfg = load_config(ExperimentConfig, None, args)
        result = run_unlearning(cfg) if job in METHODS else run_training(cfg, job)
        accelerator = result["accelerator"]
    finish(accelerator, 0)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main(sys.argv[1:]))
