"""The public Forget-MI release's sweep file runs unchanged, converts to forgetmi's names, and
its use_noise=false (like the no-noise preset) pushes the forget embeddings away."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgetmi.cli import main as cli_main
from forgetmi.config import ConfigError, ExperimentConfig, UnlearnConfig, load_config, to_dict
from forgetmi.hpc.sweep import expand, load_sweep
from forgetmi.jobs.train import main as train_main
from forgetmi.jobs.unlearn import main as unlearn_main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--text_encoder=tiny", "--image_size=64", "--wandb=disabled", "--warmup_ratio=0",
        "--early_stopping_patience=0", "--checkpoint_every=1000"]

# The release's config.yaml, key for key (values pointed at the stand-in data), as text: it is
# read byte for byte, with its YAML 1.1 quirks (1e-4 is a string there).
RELEASE = """\
program: training/forgetmi_partial.py
method: {method}
metric:
  name: forget_auc
  goal: minimize
parameters:
  project:
    value: "forget_exp"
  entity:
    value: "unlearning"
  use_noise:
    value: false
  do_train:
    value: true
  overwrite_output_dir:
    value: true
  do_eval:
    value: false
  base_model_path:
    value: "{original}/model"
  random_point_ratio:
    value: 0.1
  validation_ratio:
    value: 0.1
  retrained_model_path:
    value: "{retrained}"
  output_dir:
    value: "./unlearning_output/"
  bert_pretrained_dir:
    value: "tiny"
  text_data_dir:
    value: "{data}/"
  data_split_path:
    value: "{data}/split.csv"
  img_data_dir:
    value: "{data}/images"
  synonyms_dir:
    value: "{data}/Synonyms.csv"
  forget_set_path:
    value: "{data}/forget_set_10per.csv"
  max_seq_length:
    value: 64
  text_noise_level:
    value: 0.5
  random_seed:
    value: 42
  output_channel_encoding:
    value: "multiclass"
  learning_rate:
    values: [{rates}]
  weight_decay:
    value: 0.01
  unlearn_epochs:
    value: 1
  scheduler:
    value: "ReduceLROnPlateau"
  warmup_proportion:
    value: 0.1
  eval_batch_size:
    value: 16
  unlearn_batch_size:
    value: 8
  noise_mean:
    value: 0
  noise_std:
    value: 0.1
  alpha:
    value: 1
  beta:
    value: 1
  theta:
    value: 2
  gamma:
    value: 2
  bert_pool_last_hidden:
    value: false
  bert_pool_use_img:
    value: false
  bert_pool_img_lowerlevel:
    value: false
  reprocess_input_data:
    value: false
  id:
    value: "example"
  use_text_data_dir:
    value: false
  use_data_split_path:
    value: false
  training_mode:
    value: "supervised"
  semisupervised_training_data:
    value: "allCXR"
  use_masked_txt:
    value: false
  use_all_data:
    value: false
  use_pretrained_checkpoint:
    value: false
  print_predictions:
    value: false
  print_embeddings:
    value: false
  num_cpu_workers:
    value: 0
  logging_steps:
    value: 50
  save_epochs:
    value: 1
command:
  - ${{env}}
  - python
  - ${{program}}
  - ${{args}}
  - --random_model_path=${{random_model_path}}
  - --do_train
  - --overwrite_output_dir
"""


def release_file(folder: Path, data: Path, original: Path, method="grid", rates="1e-4",
                 retrained: Path | None = None) -> Path:
    path = folder / "config.yaml"
    path.write_text(RELEASE.format(method=method, data=data, original=original,
                                   retrained=retrained or original, rates=rates))
    return path


@pytest.fixture(scope="module")
def original(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "original"
    assert train_main([f"--data.root={demo_data.root}", f"--output_dir={out}", *TINY,
                       "--batch_size=8", "--epochs=1", "--lr=1e-3", "--mode=train"]) == 0
    return out


@pytest.fixture(scope="module")
def retrained(demo_data, tmp_path_factory):
    """The release's retrained_model_path: a retraining without the forget rows (evaluate
    refuses any other reference)."""
    out = tmp_path_factory.mktemp("release") / "retrained"
    assert train_main([f"--data.root={demo_data.root}", f"--output_dir={out}", *TINY,
                       "--batch_size=8", "--epochs=1", "--lr=1e-3", "--mode=retrain"]) == 0
    return out


def test_release_sweep_runs_unchanged(demo_data, original, retrained, tmp_path, caplog):
    config = release_file(tmp_path, demo_data.root, original, retrained=retrained)
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="forgetmi")
    assert cli_main(["sweep", str(config), "--out", str(out), "--executor", "debug",
                     "--image_size=64", "--wandb=disabled", "--log_every=50"]) == 0
    manifest = json.loads((out / "sweep.json").read_text())
    assert [t["kind"] for t in manifest["tasks"]] == ["unlearn", "report"]
    assert all(t["state"] == "done" for t in manifest["tasks"])
    run = Path(manifest["tasks"][0]["output_dir"])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # retrained_model_path: the run scored itself against it when it ended
    assert cfg["evaluate"]["retrained"] == str(retrained)
    assert json.loads((run / "metrics.json").read_text())["score"]["retrained"] == str(retrained)
    assert cfg["unlearn"]["original"] == f"{original}/model"
    assert cfg["unlearn"]["weights"] == [1, 1, 2, 2]              # beta, alpha, theta, gamma
    assert cfg["unlearn"]["objective"] == "push"                  # use_noise: false
    assert cfg["noise"]["use_image"] is cfg["noise"]["use_text"] is False
    assert cfg["seed"] == 42 and cfg["train"]["lr"] == 1e-4 and cfg["train"]["epochs"] == 1
    assert cfg["train"]["scheduler"] == "constant" and cfg["train"]["warmup_ratio"] == 0.1
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["eval_batch_size"] == 16
    assert cfg["data"]["reports"] == f"{demo_data.root}/all_data.tsv"
    assert cfg["data"]["max_length"] == 64 and cfg["model"]["text_encoder"] == "tiny"
    assert cfg["tracking"]["project"] == "forget_exp"
    assert json.loads((out / "report" / "report.json").read_text())["runs"]
    # One line lists what was dropped, each key once with its reason; no parameter dumps.
    ignored = [r.getMessage() for r in caplog.records if "release keys ignored" in r.getMessage()]
    assert len(ignored) == 1
    for key in ("random_model_path", "do_train", "overwrite_output_dir", "output_channel_encoding",
                "save_epochs", "output_dir"):
        assert len(re.findall(rf"[:;] {key} \(", ignored[0])) == 1, key
    assert "unknown config key" not in caplog.text and "{'" not in caplog.text


def test_convert_sweep_gives_the_same_runs(demo_data, original, tmp_path):
    config = release_file(tmp_path, demo_data.root, original, rates="1e-4, 1e-5")
    converted = tmp_path / "forgetmi.yaml"
    assert cli_main(["convert-sweep", str(config), str(converted)]) == 0
    text = converted.read_text()
    assert yaml.safe_load(text)["program"] == "launch/unlearn.py"
    assert "#   base_model_path -> unlearn.original" in text
    assert "#   do_train: forgetmi unlearn always trains" in text
    assert "#   retrained_model_path -> evaluate.retrained" in text
    assert "random_model_path" in text                         # named only by the command
    for name in ("alpha", "use_noise", "learning_rate", "base_model_path"):
        assert f"\n  {name}:" not in text                       # no release name as a key
    release_runs = expand(load_sweep(config), tmp_path / "a", extra=TINY)
    converted_runs = expand(load_sweep(converted), tmp_path / "a", extra=TINY)
    assert len(release_runs) == 2
    assert [r.run_id for r in release_runs] == [r.run_id for r in converted_runs]
    assert [to_dict(r.config) for r in release_runs] == [to_dict(r.config) for r in converted_runs]
    assert {r.config.train.lr for r in release_runs} == {1e-4, 1e-5}
    # a random release sweep over finite values runs each combination once
    random = release_file(tmp_path, demo_data.root, original, "random", "1e-4, 1e-5")
    assert len(expand(load_sweep(random), tmp_path / "b", extra=TINY)) == 2


def test_no_noise_pushes_the_forget_embeddings(demo_data, original, tmp_path):
    assert UnlearnConfig(preset="no-noise").objective == "push"
    assert UnlearnConfig(preset="unimodal").objective == "pull"
    explicit = load_config(ExperimentConfig, None, ["--preset=no-noise", "--objective=pull"])
    assert explicit.unlearn.objective == "pull"                   # an explicit choice stays
    out = tmp_path / "no-noise"
    assert unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={out}", *TINY,
                         f"--original={original}/model", "--preset=no-noise", "--epochs=3",
                         "--batch_size=8", "--lr=1e-3", "--log_every=1"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["unlearn"]["objective"] == "push"
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
              if "epoch/uu" in x]
    uu = [e["epoch/uu"] for e in epochs]
    # Pulling the clean forget rows toward the original's own embeddings of them shrinks UU
    # (only dropout tells the two apart): retention. Pushing (the release without noise) grows it.
    assert uu[-1] > 2 * uu[0] + 0.05, uu


def test_sweep_errors_name_the_run_and_key_and_hide_dependency_warnings(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"program": "launch/unlearn.py", "method": "grid",
                                     "parameters": {"lr": {"values": ["fast"]},
                                                    "seed": {"value": 1},
                                                    "preset": {"value": "equal"}}}))
    env = {**os.environ, "PYTHONWARNINGS": ""}
    run = [sys.executable, "-m", "forgetmi.cli"]
    quiet = subprocess.run([*run, "sweep", str(sweep), "--out", str(tmp_path / "o"),
                            "--executor", "debug"], capture_output=True, text=True, env=env,
                           cwd=REPO)
    assert quiet.returncode == 2
    errors = [line for line in quiet.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "s.yaml: run " in errors[0]
    assert "train.lr: expected a number, got 'fast'" in errors[0] and "'seed'" not in errors[0]
    assert "Warning" not in quiet.stderr, quiet.stderr
    verbose = subprocess.run([*run, "-v", "sweep", str(sweep), "--out", str(tmp_path / "o"),
                              "--executor", "debug"], capture_output=True, text=True, env=env,
                             cwd=REPO)
    assert "allow_population_by_field_name" in verbose.stderr
    with pytest.raises(ConfigError, match=r"unknown config key 'preseet'; did you mean preset\?"):
        load_config(ExperimentConfig, None, ["--preseet=equal"])


def test_agent_command_of_the_release_program(monkeypatch, capsys):
    """What `wandb agent` runs for the release's file: its program and names, translated."""
    from forgetmi.hpc.node_launch import command

    monkeypatch.setenv("FORGETMI_PROCESSES", "2")
    monkeypatch.setenv("WANDB_RUN_ID", "r1")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw")
    cmd = command("training/forgetmi_partial.py",
                  ["--alpha=1", "--beta=1", "--theta=2", "--gamma=2", "--use_noise=false",
                   "--base_model_path=runs/o/model", "--learning_rate=1e-4", "--do_train",
                   "--output_dir=./unlearning_output/", "--random_model_path="])
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    tail = cmd[cmd.index("launch/unlearn.py"):]
    assert tail[-1] == "--output_dir=runs/sweeps/sw/r1"          # not the release's shared one
    assert sorted(tail[1:-1]) == sorted([
        "--unlearn.weights=[1,1,2,2]", "--noise.use_image=False", "--noise.use_text=False",
        "--unlearn.objective=push", "--unlearn.original=runs/o/model", "--train.lr=1e-4"])
    cfg = load_config(ExperimentConfig, None, tail[1:])
    assert cfg.unlearn.weights == [1, 1, 2, 2] and cfg.unlearn.objective == "push"
    # forgetmi's own names pass through untouched, release names beside them are translated
    mixed = command("launch/unlearn.py", ["--preset=equal", "--learning_rate=1e-5"])
    assert mixed[mixed.index("launch/unlearn.py"):] == [
        "launch/unlearn.py", "--preset=equal", "--train.lr=1e-5", "--output_dir=runs/sweeps/sw/r1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(FORGETMI_DRY_RUN="1", FORGETMI_PROCESSES="1")
    shim = subprocess.run([sys.executable, "training/forgetmi_partial.py", "--alpha=1",
                           "--beta=1", "--theta=2", "--gamma=2", "--learning_rate=1e-5"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert shim.returncode == 0, shim.stderr
    assert shim.stdout.strip().endswith("launch/unlearn.py --train.lr=1e-5 "
                                        "--unlearn.weights=[1,1,2,2]")
