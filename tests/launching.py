"""``accelerate launch`` with a shipped config, as a workstation user runs it, for the tests.

The CPU environment each kind of config needs is read from the config itself: DDP processes
join one gloo group only with ``ACCELERATE_USE_CPU=1``, and DeepSpeed runs on the CPU with
``DS_ACCELERATOR=cpu``. Distributed configs run two processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config_path(name: str) -> Path:
    return REPO / "configs" / "accelerate" / f"{name}.yaml"


def launch_settings(config: Path) -> tuple[str, int]:
    """(distributed_type, processes) of a shipped Accelerate config as the tests launch it."""
    kind = str(yaml.safe_load(config.read_text())["distributed_type"])
    return kind, 1 if kind == "NO" else 2


def accelerate_launch(config: Path, script: str, args: list[str], expect_rc: int | None = 0,
                      timeout: int = 420, deepspeed_config: Path | None = None,
                      cwd: Path = REPO, extra_env: dict[str, str] | None = None) -> str:
    """Run ``script`` under ``accelerate launch --config_file config`` from ``cwd`` (the
    repository root unless given; the repository stays importable from anywhere).

    Returns the combined output; it is printed (pytest shows it when a test fails) and the test
    fails with its tail when the exit code is not ``expect_rc``.
    """
    kind, processes = launch_settings(config)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    if kind == "DEEPSPEED":
        env["DS_ACCELERATOR"] = "cpu"
    else:
        env["ACCELERATE_USE_CPU"] = "1"  # without it DDP's two processes never join one group
    if cwd != REPO:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", str(processes), "--main_process_port", str(free_port())]
    if deepspeed_config is not None:
        cmd += ["--deepspeed_config_file", str(deepspeed_config)]
    cmd += [script, *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
        pytest.fail(f"{config.stem} launch timed out after {timeout} s:\n{output[-8000:]}")
    output = proc.stdout + proc.stderr
    print(f"$ {' '.join(cmd)}\n[exit code {proc.returncode}]\n{output[-8000:]}")
    if expect_rc is not None and proc.returncode != expect_rc:
        pytest.fail(f"{config.stem} launch exited with {proc.returncode}, expected {expect_rc}:\n"
                    f"{output[-8000:]}")
    return output


# One set of arguments for every job of the launch matrix (tests/matrix_worker.py) and for the
# distributed tests, which read the matrix's train runs as their DDP / ZeRO-2 / ZeRO-3 runs
# instead of launching their own. Three epochs so that every method, whose epoch may be three
# updates (22 forget rows, 2 ranks x 4 a step), still reaches UPDATES. Finished runs keep their
# last checkpoint: the tests read what each rank saved.
UPDATES = 8
ARGS = ["--text_encoder=tiny", "--image_size=64", "--batch_size=4", "--epochs=3",
        f"--max_steps={UPDATES}", "--checkpoint_every=100", "--log_every=1", "--warmup_ratio=0",
        "--lr=1e-4", "--seed=0", "--wandb=disabled", "--scrub.max_epochs=1", "--k=2",
        "--keep_checkpoints=1"]


def run_matrix(config: Path, data_root: Path, out: Path, *extra: str) -> str:
    """Every job (train, retrain, each method) in turn under one launch with ``config``."""
    return accelerate_launch(config, "tests/matrix_worker.py",
                             [str(data_root), str(out), *ARGS, *extra], timeout=600)
