"""``python -m forgetmi.hpc.node_launch PROGRAM ARGS...``: ``accelerate launch`` on this node.

The command of an online W&B sweep (see ``slurm/wandb_agents.sbatch``): the agent runs it with
the run's ``--key=value`` arguments, and this starts one process per GPU of the node with the
Accelerate config in ``FORGETMI_ACCELERATE_CONFIG`` (DDP by default). W&B starts commands
without a shell, so the node's size is read here rather than written into the sweep file. Each
sweep run gets its own output folder, named after the sweep and the W&B run. The release's
program (``training/forgetmi_partial.py``) and parameter names are translated first
(:mod:`forgetmi.hpc.release`).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from forgetmi.errors import exit_on_error
from forgetmi.hpc.release import for_launch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes() -> int:
    for name in ("FORGETMI_PROCESSES", "SLURM_GPUS_ON_NODE"):
        if os.environ.get(name, "").isdigit():
            return max(int(os.environ[name]), 1)
    try:
        import torch
        return max(torch.cuda.device_count(), 1)
    except Exception:  # noqa: BLE001 - no CUDA build: one process
        return 1


def _here_or_shipped(path: str, what: str) -> str:
    """A path as given when it exists where the agent runs, else the installed package's copy
    (a wheel install has no ``launch/`` or ``configs/`` beside the user's folder)."""
    if Path(path).exists():
        return path
    from forgetmi.shipped import resolve
    return str(resolve(path, what))


def command(program: str, args: list[str]) -> list[str]:
    config = os.environ.get("FORGETMI_ACCELERATE_CONFIG", "configs/accelerate/ddp.yaml")
    # The release's program and parameter names (its sweep file, run unchanged by an agent).
    program, args = for_launch(program, list(args))
    config = _here_or_shipped(config, "Accelerate config (FORGETMI_ACCELERATE_CONFIG)")
    program = _here_or_shipped(program, "program")
    run_id, sweep_id = os.environ.get("WANDB_RUN_ID"), os.environ.get("WANDB_SWEEP_ID")
    if run_id and not any(a.startswith("--output_dir=") for a in args):
        root = Path(os.environ.get("FORGETMI_SWEEP_ROOT", "runs/sweeps"))
        args.append(f"--output_dir={root / (sweep_id or 'sweep') / run_id}")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
            "--num_processes", str(processes()), "--main_process_port", str(_free_port()),
            program, *args]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stderr.write("usage: python -m forgetmi.hpc.node_launch PROGRAM [--key=value ...]\n")
        return 2
    cmd = command(argv[0], argv[1:])
    if os.environ.get("FORGETMI_DRY_RUN"):
        sys.stdout.write(" ".join(cmd) + "\n")
        return 0
    os.execv(cmd[0], cmd)
    return 0  # not reached


@exit_on_error
def release_main(argv: list[str] | None = None) -> int:
    """``training/forgetmi_partial.py ARGS`` (the release's program path, which its sweep file
    names): the unlearning job on every GPU of the node, its flags translated."""
    from forgetmi.utils.logs import setup_logging

    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["training/forgetmi_partial.py", *argv])


if __name__ == "__main__":
    sys.exit(main())
