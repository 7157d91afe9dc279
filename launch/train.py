"""Workstation front-end: ``accelerate launch [--config_file configs/accelerate/X.yaml]
launch/train.py --config configs/experiments/X.yaml [--mode=retrain] [--key=value ...]``."""

from forgetmi.jobs.train import main

if __name__ == "__main__":
    raise SystemExit(main())
