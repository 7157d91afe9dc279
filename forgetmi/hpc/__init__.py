"""Running many jobs: sweeps (W&B's format, expanded offline), Slurm arrays through submitit,
dependent pipelines, and their status."""
