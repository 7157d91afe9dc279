"""Faults: killed runs resume to the same weights; damaged, mismatched or unwritable
checkpoints and non-finite losses stop with a clear error and leave earlier results intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from forgetmi.engine import checkpoint as ckpt
from forgetmi.jobs.train import main as train_main
from forgetmi.jobs.unlearn import main as unlearn_main
from tests.originals import TINY

REPO = Path(__file__).resolve().parents[1]


def max_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model" / "model.safetensors")), \
        load_file(str(b / "model" / "model.safetensors"))
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


@pytest.fixture(scope="module")
def original(small_original):
    return small_original


def run_until_checkpoint_then_kill(cmd: list[str], run: Path, sig: int) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    state = run / "checkpoints" / "latest" / "trainer_state.json"
    deadline = time.monotonic() + 300
    try:
        while not (state.is_file() and json.loads(state.read_text())["updates"] >= 4):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -sig, proc.stdout.read()[-3000:]
    assert not (run / "timing.json").exists()          # it really was cut short


@pytest.mark.parametrize("job,sig", [("unlearn", signal.SIGKILL), ("train", signal.SIGTERM)])
def test_killed_run_resumes_to_the_same_weights(demo_data, original, tmp_path, job, sig):
    args = [f"--data.root={demo_data.root}", *TINY, "--epochs=8", "--max_steps=24",
            "--lr=1e-3", "--checkpoint_every=2"]
    if job == "unlearn":
        args.append(f"--original={original}")
    entry = unlearn_main if job == "unlearn" else train_main
    assert entry([*args, f"--output_dir={tmp_path / 'straight'}"]) == 0
    killed = tmp_path / "killed"
    run_until_checkpoint_then_kill([sys.executable, "-m", "forgetmi.cli", job, *args,
                                    f"--output_dir={killed}"], killed, sig)
    assert entry([*args, f"--output_dir={killed}"]) == 0
    assert max_difference(tmp_path / "straight", killed) <= 1e-6


def crashed_run(demo_data, original, out: Path, *extra) -> list[str]:
    args = [f"--data.root={demo_data.root}", f"--output_dir={out}", f"--original={original}",
            *TINY, "--epochs=4", "--lr=1e-3", "--checkpoint_every=2", *extra]
    assert unlearn_main([*args, "--stop_after=5"]) == 3
    assert ckpt.verify(out / "checkpoints" / "latest")["updates"] == 4
    return args


def test_damaged_checkpoint_is_refused_and_left_alone(demo_data, original, tmp_path, caplog):
    args = crashed_run(demo_data, original, tmp_path / "run")
    weights = tmp_path / "run" / "checkpoints" / "latest" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert unlearn_main(args) == 2
    assert "does not match its checksum" in caplog.text
    assert weights.read_bytes() == bytes(data)            # not overwritten, nothing trained
    assert not (tmp_path / "run" / "model").exists()


def test_checkpoint_of_other_settings_is_refused(demo_data, original, tmp_path, caplog):
    """Every setting the run computes with is the checkpoint's (a hash of them), not only the
    batch plan: each change is refused in one line naming the keys and the way out."""
    args = crashed_run(demo_data, original, tmp_path / "run")
    for extra, named in [("--batch_size=4", "train.batch_size 8 -> 4"), ("--seed=5", "seed 0 -> 5"),
                         ("--lr=0.01", "train.lr 0.001 -> 0.01"),
                         ("--preset=retention", "unlearn.preset 'unimodal' -> 'retention'"),
                         ("--noise.image_std=0.3", "noise.image_std 0.1 -> 0.3")]:
        caplog.clear()
        assert unlearn_main([*args, extra]) == 2, extra
        [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert "a run with other settings" in error and named in error, error
        assert "another --output_dir, or --resume=false" in error and len(error) < 300, error
    assert ckpt.verify(tmp_path / "run" / "checkpoints" / "latest")["updates"] == 4
    # settings of where and how it logs and checkpoints do not count: it resumes and finishes
    assert unlearn_main([*args, "--log_every=3", "--checkpoint_every=3"]) == 0
    assert not (tmp_path / "run" / "checkpoints").exists()       # finished: the model alone


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(demo_data, original, tmp_path,
                                                             caplog):
    out = tmp_path / "run"
    code = unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={out}",
                         f"--original={original}", *TINY, "--epochs=4", "--lr=1e30",
                         "--max_grad_norm=0", "--checkpoint_every=1", "--method=finetune"])
    assert code == 2 and "non-finite" in caplog.text
    state = ckpt.verify(out / "checkpoints" / "latest")      # the last complete one verifies
    assert state["updates"] >= 1 and not state["done"]


def test_full_disk_while_checkpointing(demo_data, original, tmp_path, caplog, monkeypatch):
    args = [f"--data.root={demo_data.root}", f"--output_dir={tmp_path / 'run'}",
            f"--original={original}", *TINY, "--epochs=4", "--lr=1e-3", "--checkpoint_every=2"]
    real = ckpt._manifest
    calls = []

    def full_on_second(folder):
        calls.append(folder)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "manifest.json"))
        return real(folder)

    monkeypatch.setattr(ckpt, "_manifest", full_on_second)
    assert unlearn_main(args) == 2
    assert "no space left on the device" in caplog.text and "intact" in caplog.text
    assert ckpt.verify(tmp_path / "run" / "checkpoints" / "latest")["updates"] == 2
    monkeypatch.setattr(ckpt, "_manifest", real)                # space freed: resume
    assert unlearn_main(args) == 0
    straight = [a.replace(str(tmp_path / "run"), str(tmp_path / "straight")) for a in args]
    assert unlearn_main(straight) == 0
    assert max_difference(tmp_path / "straight", tmp_path / "run") <= 1e-6
