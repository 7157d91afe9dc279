"""What ``accelerate launch --config_file X`` gives each process, for processes that Slurm starts.

A Slurm task with ``tasks_per_node = G`` starts G copies of a job; submitit's
``TorchDistributedEnvironment`` gives each its rank, world size and rendezvous address, and the
environment below tells Accelerate which strategy the shipped config asks for (DDP, or
DeepSpeed with its JSON), exactly as the launcher would.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from forgetmi.errors import ForgetMIError


def accelerate_env(config_file: str | Path | None, repo: Path | None = None,
                   cuda: bool | None = None) -> dict[str, str]:
    """Environment variables for one process of a run under the Accelerate config ``config_file``."""
    if config_file is None:
        return {}
    path = Path(config_file)
    if not path.is_absolute() and repo is not None:
        path = repo / path
    if not path.is_file():
        raise ForgetMIError(f"{path}: Accelerate config not found")
    cfg = yaml.safe_load(path.read_text()) or {}
    kind = str(cfg.get("distributed_type", "NO")).upper()
    cuda = _has_cuda() if cuda is None else cuda
    env = {"ACCELERATE_MIXED_PRECISION": str(cfg.get("mixed_precision", "no"))}
    if kind == "DEEPSPEED":
        ds = cfg.get("deepspeed_config") or {}
        json_file = ds.get("deepspeed_config_file")
        if json_file is None:
            raise ForgetMIError(f"{path}: deepspeed_config.deepspeed_config_file is required")
        json_path = Path(json_file)
        if not json_path.is_absolute():
            json_path = (repo or path.parent) / json_path
        env.update(ACCELERATE_USE_DEEPSPEED="true",
                   ACCELERATE_DEEPSPEED_CONFIG_FILE=str(json_path),
                   ACCELERATE_DEEPSPEED_ZERO3_INIT=str(bool(ds.get("zero3_init_flag", False))).lower())
        if not cuda:
            env["DS_ACCELERATOR"] = "cpu"
    elif kind in ("MULTI_GPU", "MULTI_CPU") and not cuda:
        env["ACCELERATE_USE_CPU"] = "1"  # gloo processes join one group only with this
    return env


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch build with CUDA means no CUDA
        return False


def apply(env: dict[str, str]) -> None:
    os.environ.update(env)
