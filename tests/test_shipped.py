"""The shipped configs, launchers and Slurm templates, from any folder and from a wheel.

Relative paths mean the folder the command was typed in, then the shipped copy; a DeepSpeed
launch finds its JSON from any folder, and one that would silently run without DeepSpeed stops
in one line. A wheel installed into a fresh environment outside the repository carries the
files, copies them out, and runs a two-rank job from a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from forgetmi import shipped
from forgetmi.cli import main as cli_main
from forgetmi.errors import ForgetMIError
from tests.launching import ARGS, REPO, accelerate_launch, config_path, free_port

ZERO2_JSON = REPO / "configs" / "deepspeed" / "zero2.json"


def test_relative_paths_resolve_where_typed_then_shipped(tmp_path, monkeypatch):
    from forgetmi.hpc.launcher import accelerate_env
    from forgetmi.hpc.node_launch import command

    monkeypatch.chdir(tmp_path)
    assert shipped.root() == REPO                    # a checkout ships its own folders
    assert shipped.resolve("configs/deepspeed/zero2.json", "x") == ZERO2_JSON
    own = tmp_path / "configs" / "deepspeed" / "zero2.json"
    own.parent.mkdir(parents=True)
    own.write_text("{}")
    assert shipped.resolve("configs/deepspeed/zero2.json", "x") == own   # the user's wins
    with pytest.raises(ForgetMIError, match=r"^DeepSpeed config not found: configs/nope.json "
                                            r"\(looked in .*\); give an absolute path$"):
        shipped.resolve("configs/nope.json", "DeepSpeed config")
    own.unlink()
    # A Slurm rank made in this folder: the Accelerate config and its JSON from the shipped files.
    env = accelerate_env("configs/accelerate/zero2.yaml", tmp_path, cuda=False)
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(ZERO2_JSON)
    # A W&B agent's command: the launcher and config absolute when this folder has none.
    monkeypatch.setenv("FORGETMI_PROCESSES", "2")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cmd = command("launch/unlearn.py", ["--seed=1"])
    assert cmd[cmd.index("--config_file") + 1] == str(REPO / "configs/accelerate/ddp.yaml")
    assert cmd[-2:] == [str(REPO / "launch/unlearn.py"), "--seed=1"]


def test_config_files_named_on_the_command_line_fall_back_to_the_shipped_copy(tmp_path,
                                                                          monkeypatch):
    from forgetmi.config import ConfigError, ExperimentConfig, load_config
    from forgetmi.hpc.sweep import load_sweep
    from forgetmi.jobs.protocol import load_protocol

    monkeypatch.chdir(tmp_path)
    cfg = load_config(ExperimentConfig, "configs/experiments/demo.yaml", ["--seed=7"])
    assert cfg.seed == 7
    protocol = load_protocol("configs/experiments/paper-demo.yaml")
    assert protocol.base_dir == str(REPO / "configs" / "experiments")    # its files beside it
    assert not Path(protocol.output_dir).is_absolute()                   # its runs: here
    assert load_sweep("configs/sweeps/baselines.yaml").config
    with pytest.raises(ConfigError, match=r"^configs/experiments/mine.yaml: config file not found"):
        load_config(ExperimentConfig, "configs/experiments/mine.yaml")


def test_configs_command_lists_and_copies(tmp_path, capsys, caplog):
    assert cli_main(["configs", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"configs/accelerate/zero2.yaml", "configs/deepspeed/zero3.json", "launch/train.py",
            "slurm/single_run.sbatch"} <= set(listed)
    assert not any("__pycache__" in name for name in listed)
    assert cli_main(["configs", "--show", "configs/accelerate/ddp.yaml"]) == 0
    assert "distributed_type: MULTI_GPU" in capsys.readouterr().out

    assert cli_main(["configs", "--copy", str(tmp_path)]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) \
        == listed
    for stage in ("zero2", "zero3"):
        copied = yaml.safe_load((tmp_path / f"configs/accelerate/{stage}.yaml").read_text())
        # the copy names its own JSON, so it launches from anywhere and an edit of it counts
        assert copied["deepspeed_config"]["deepspeed_config_file"] == \
            str(tmp_path / f"configs/deepspeed/{stage}.json")
    assert cli_main(["configs", "--copy", str(tmp_path)]) == 2
    assert "exists" in caplog.text and "--force" in caplog.text
    assert cli_main(["configs", "--copy", str(tmp_path), "--force"]) == 0


def test_deepspeed_request_is_checked_before_the_accelerator(monkeypatch, tmp_path):
    from forgetmi.engine.distributed import build_accelerator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "configs/deepspeed/zero2.json")
    with pytest.raises(ForgetMIError, match="ACCELERATE_USE_CPU=1 makes Accelerate run plain DDP"):
        build_accelerator(None, 1)
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "configs/deepspeed/zero9.json")
    with pytest.raises(ForgetMIError, match=r"DeepSpeed config .* not found: "
                                            r"configs/deepspeed/zero9.json"):
        build_accelerator(None, 1)


def _train(data, out: Path) -> list[str]:
    return [f"--data.root={data.root}", f"--output_dir={out}", *ARGS, "--max_steps=2",
            "--epochs=1"]


@pytest.mark.distributed
def test_zero2_launches_from_another_folder(demo_data, tmp_path):
    """The repository's ZeRO-2 config launched from a folder with no configs/ in it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    accelerate_launch(config_path("zero2"), str(REPO / "launch/train.py"),
                      _train(demo_data, tmp_path / "run"), cwd=elsewhere)
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert (timing["world_size"], timing["zero_stage"], timing["updates"]) == (2, 2, 2)


@pytest.mark.distributed
def test_deepspeed_dropped_by_the_cpu_switch_stops_in_one_line(demo_data, tmp_path):
    """ACCELERATE_USE_CPU=1 under a DeepSpeed config used to train plain DDP (zero_stage 0)."""
    output = accelerate_launch(config_path("zero2"), "launch/train.py",
                               _train(demo_data, tmp_path / "run"), expect_rc=None,
                               extra_env={"ACCELERATE_USE_CPU": "1"})
    refusals = [line for line in output.splitlines() if "DeepSpeed was asked for" in line]
    assert refusals and all("unset ACCELERATE_USE_CPU" in line for line in refusals)
    assert "ChildFailedError" in output                          # the launch failed
    assert output.count("Traceback") <= 1                        # the launcher's, no worker's
    assert not (tmp_path / "run" / "timing.json").exists()


def _fresh_environment(folder: Path, wheel: Path) -> Path:
    """A venv outside the repository with the wheel installed and this environment's
    dependencies visible (a .pth), not its editable forgetmi: returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                              "get_paths()['purelib'])"], check=True, capture_output=True,
                             text=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the editable forgetmi beside the dependencies must not count.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", "--ignore-installed", str(wheel)], check=True)
    return python


@pytest.mark.slow
@pytest.mark.distributed
def test_wheel_carries_the_shipped_files_and_runs_two_ranks(demo_data, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                   cwd=tmp_path)
    python = _fresh_environment(tmp_path / "venv", next(wheels.glob("forgetmi-*.whl")))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (
        "PYTHONPATH", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(CUDA_VISIBLE_DEVICES="", WANDB_MODE="disabled", ACCELERATE_USE_CPU="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=400)
        assert proc.returncode == 0, (cmd, (proc.stdout + proc.stderr)[-6000:])
        return proc.stdout

    where = run(str(python), "-c", "import forgetmi, forgetmi.shipped as s; "
                                   "print(forgetmi.__file__); print(s.root())").split()
    assert all(str(tmp_path / "venv") in w for w in where), where     # the wheel, not the repo
    run(str(tmp_path / "venv/bin/forgetmi"), "configs", "--copy", ".")
    assert (work / "configs/accelerate/zero2.yaml").is_file() \
        and (work / "slurm/single_run.sbatch").is_file()
    # Two ranks of the installed package from the copied launcher; relative paths mean `work`.
    run(str(python), "-m", "accelerate.commands.launch", "--config_file",
        "configs/accelerate/ddp.yaml", "--num_processes", "2", "--main_process_port",
        str(free_port()), "launch/train.py", f"--data.root={demo_data.root}",
        "--output_dir=runs/ddp", *ARGS, "--max_steps=2", "--epochs=1")
    timing = json.loads((work / "runs/ddp/timing.json").read_text())
    assert (timing["world_size"], timing["updates"]) == (2, 2)
    assert (work / "runs/ddp/model/model.safetensors").is_file()
