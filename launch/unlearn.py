"""Workstation front-end: ``accelerate launch [--config_file configs/accelerate/X.yaml]
launch/unlearn.py --config configs/experiments/X.yaml --original=RUN/model [--preset=...]``."""

from forgetmi.jobs.unlearn import main

if __name__ == "__main__":
    raise SystemExit(main())
