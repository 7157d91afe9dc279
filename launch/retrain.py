"""Workstation front-end: ``accelerate launch [--config_file configs/accelerate/X.yaml]
launch/retrain.py --config configs/experiments/X.yaml [--key=value ...]`` — the gold-standard
model on the retain rows only (the same engine as launch/train.py)."""

from forgetmi.jobs.train import retrain

if __name__ == "__main__":
    raise SystemExit(retrain())
