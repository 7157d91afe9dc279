"""Check the run folders left by tests/matrix_worker.py (every job under one launch config).

    python benchmarks/check_matrix_run.py OUT [--world-size N] [--min-applied K]

For each job: the world size, at least K updates applied (fp16's loss scaler may skip the first
ones), finite weights, every frozen parameter unchanged from the weights the job started from
and, where nothing was skipped, every trainable one moved. Prints one line per job; exit 1 on a
failed check. Used by benchmarks/gpu_check.sh for the runs only a GPU can do (fp16).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--min-applied", type=int, default=2)
    args = parser.parse_args(argv)
    original = load_file(str(args.out / "train" / "model" / "model.safetensors"))
    failures = []
    for run in sorted(p for p in args.out.iterdir() if (p / "timing.json").is_file()):
        timing = json.loads((run / "timing.json").read_text())
        record = json.loads((run / "trainable.json").read_text())
        after = load_file(str(run / "model" / "model.safetensors"))
        applied = timing["updates"] - timing.get("skipped_updates", 0)
        finite = all(bool(torch.isfinite(v).all()) for v in after.values() if v.is_floating_point())
        problems = []
        if timing["world_size"] != args.world_size:
            problems.append(f"world size {timing['world_size']}")
        if applied < args.min_applied:
            problems.append(f"only {applied} updates applied")
        if not finite:
            problems.append("non-finite weights")
        if run.name not in ("train", "retrain"):   # those start from fresh weights
            moved = {k for k in record["trainable"] + record["frozen"]
                     if not torch.equal(original[k], after[k])}
            if set(record["frozen"]) & moved:
                problems.append(f"frozen but changed: {sorted(set(record['frozen']) & moved)[:4]}")
            if applied == timing["updates"] and set(record["trainable"]) - moved:
                problems.append(f"trainable but unchanged: "
                                f"{sorted(set(record['trainable']) - moved)[:4]}")
        print(f"{run.name:13} updates {timing['updates']:3d}  skipped "
              f"{timing.get('skipped_updates', 0):3d}  trainable "
              f"{record['trainable_parameters']:>12,}  {'; '.join(problems) or 'ok'}")
        if problems:
            failures.append(run.name)
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
