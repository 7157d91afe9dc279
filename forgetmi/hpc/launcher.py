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


def accelerate_env(config_file: str | Path | None, cwd: str | Path | None = None,
                   cuda: bool | None = None) -> dict[str, str]:
    """Environment variables for one process of a run under the Accelerate config ``config_file``.

    Relative paths (the config, its DeepSpeed JSON) mean ``cwd`` (where the command was typed),
    else the shipped files (:mod:`forgetmi.shipped`).
    """
    from forgetmi.shipped import resolve

    if config_file is None:
        return {}
    path = resolve(config_file, "Accelerate config", cwd)
    cfg = yaml.safe_load(path.read_text()) or {}
    kind = str(cfg.get("distributed_type", "NO")).upper()
    cuda = _has_cuda() if cuda is None else cuda
    env = {"ACCELERATE_MIXED_PRECISION": str(cfg.get("mixed_precision", "no"))}
    if kind == "DEEPSPEED":
        ds = cfg.get("deepspeed_config") or {}
        json_file = ds.get("deepspeed_config_file")
        if json_file is None:
            raise ForgetMIError(f"{path}: deepspeed_config.deepspeed_config_file is required")
        json_path = resolve(json_file, f"{path}: deepspeed_config_file", cwd)
        env.update(ACCELERATE_USE_DEEPSPEED="true",
                   ACCELERATE_DEEPSPEED_CONFIG_FILE=str(json_path),
                   ACCELERATE_DEEPSPEED_ZERO3_INIT=str(bool(ds.get("zero3_init_flag", False))).lower())
        if not cuda:
            env["DS_ACCELERATOR"] = "cpu"
    elif kind in ("MULTI_GPU", "MULTI_CPU") and not cuda:
        env["ACCELERATE_USE_CPU"] = "1"  # gloo processes join one group only with this
    return env


# Where a rendezvous port is drawn from when the kernel's ephemeral range leaves no room below
# it: the registered ports above 1023 that few daemons listen on.
PORT_FLOOR = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL = (32768, 60999)


def ephemeral_ports(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The range the kernel draws client sockets' local ports from (Linux's default when the
    file is absent or unreadable)."""
    try:
        low, high = (int(v) for v in path.read_text().split()[:2])
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return (low, high) if 0 < low <= high <= 65535 else LINUX_EPHEMERAL


def rendezvous_port(job_id: str, ephemeral: tuple[int, int] | None = None) -> int:
    """The rank-0 port of a multi-rank Slurm task: the same on every rank (drawn from the job
    id), outside the ephemeral range. submitit draws from 20000-60000, which overlaps Linux's
    32768-60999: a client socket of any process on the node may hold that port, and the other
    ranks then wait for a rendezvous that never comes."""
    import zlib

    low, high = ephemeral or ephemeral_ports()
    if low - 1 >= PORT_FLOOR:
        first, last = PORT_FLOOR, low - 1           # below the range: 10000-32767 on Linux
    elif high + 1 <= 65535 - 1000:
        first, last = high + 1, 65535               # above it, when a range starts low
    else:
        first, last = 1024, max(1024, low - 1)      # a range that fills nearly everything
    return first + zlib.crc32(str(job_id).encode()) % (last - first + 1)


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch build with CUDA means no CUDA
        return False


def apply(env: dict[str, str]) -> None:
    os.environ.update(env)
