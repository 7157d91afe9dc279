"""The public Forget-MI release's sweep file runs unchanged, converts to forgetmi's names, and
gives the same runs offline, under ``wandb agent`` and converted; its use_noise=false pushes the
forget embeddings away from the original's embeddings of the (still perturbed) noisy copy."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from forgetmi.cli import main as cli_main
from forgetmi.config import ConfigError, ExperimentConfig, UnlearnConfig, load_config, to_dict
from forgetmi.hpc.release import translate
from forgetmi.hpc.sweep import expand, load_sweep, run_arguments
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


# The release's own command: every flag as --key=${key} (items `wandb agent` leaves unfilled:
# it fills only an item that is a macro as a whole), use_noise and validation_ratio among none
# of them (its program read wandb.config), the program through ${program} so that forgetmi's
# front-end of that name runs it.
RELEASE_FLAGS = """unlearn_epochs random_model_path forget_set_path data_split_path output_dir
output_channel_encoding text_data_dir img_data_dir synonyms_dir reprocess_input_data base_model_path
retrained_model_path bert_pretrained_dir max_seq_length text_noise_level random_seed learning_rate
weight_decay scheduler warmup_proportion eval_batch_size unlearn_batch_size noise_mean noise_std
alpha beta theta gamma bert_pool_last_hidden bert_pool_use_img bert_pool_img_lowerlevel
training_mode semisupervised_training_data use_masked_txt use_all_data use_pretrained_checkpoint
print_predictions print_embeddings num_cpu_workers logging_steps save_epochs""".split()


def release_command_file(folder: Path, data: Path, original: Path, rates="1e-4, 1e-5") -> Path:
    """The release's config.yaml with its own command (random, as it is)."""
    path = release_file(folder, data, original, "random", rates)
    text = path.read_text()
    command = ["${env}", "${interpreter}", "${program}",
               *(f"--{k}=${{{k}}}" for k in RELEASE_FLAGS[:13]), "--do_train",
               "--overwrite_output_dir", *(f"--{k}=${{{k}}}" for k in RELEASE_FLAGS[13:])]
    path.write_text(text[:text.index("command:")] + "command:\n"
                    + "".join(f"  - {c}\n" for c in command))
    return path


def agent_config(sweep: Path, params: dict, folder: Path, monkeypatch) -> dict:
    """The settings of the run ``wandb agent`` starts for ``params`` of ``sweep``, built as the
    agent builds it (W&B's own functions): the run's parameters written to the file it names in
    WANDB_SWEEP_PARAM_PATH, the command's whole-item macros filled; then forgetmi's launcher
    (the release's program: its front-end of that name) and the config the job reads."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils
    from wandb.sdk.lib import config_util

    from forgetmi.hpc.node_launch import command

    spec = yaml.safe_load(sweep.read_text())
    args = {key: {"value": value} for key, value in params.items()}
    param_file = folder / "wandb" / "sweep-sw" / "config-r1.yaml"
    config_util.save_config_file_from_dict(str(param_file), args)
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(param_file))
    monkeypatch.setenv("WANDB_RUN_ID", "r1")
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw")
    macros = sweep_utils.create_sweep_command_args({"args": args})
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[spec["program"]])
    argv = []
    for item in map(str, sweep_utils.create_sweep_command(list(spec["command"]))):
        whole = item.startswith("${") and item.endswith("}")
        argv += (macros.get(item[2:-1]) or []) if whole else [item]
    start = argv.index(spec["program"])
    launched = command(argv[start], argv[start + 1:])
    job = launched[launched.index("launch/unlearn.py") + 1:]
    assert job[-1] == "--output_dir=runs/sweeps/sw/r1"
    return settings(load_config(ExperimentConfig, None, job[:-1]))


def settings(config) -> dict:
    """A run's resolved settings, its output folder aside (each path names its own)."""
    return {k: v for k, v in to_dict(config).items() if k != "output_dir"}


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
                     "--image_size=64", "--crop_size=64", "--wandb=disabled",
                     "--log_every=50"]) == 0
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
    assert cfg["noise"]["use_image"] is cfg["noise"]["use_text"] is True   # still perturbed
    assert cfg["unlearn"]["retention_cap"] == 1.0 and cfg["data"]["val_fraction"] == 0
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
    assert UnlearnConfig(preset="no-noise").effective_objective == "push"
    assert UnlearnConfig(preset="unimodal").effective_objective == "pull"
    explicit = load_config(ExperimentConfig, None, ["--preset=no-noise", "--objective=pull"])
    assert explicit.unlearn.effective_objective == "pull"         # an explicit choice stays
    out = tmp_path / "no-noise"
    assert unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={out}", *TINY,
                         f"--original={original}/model", "--preset=no-noise", "--epochs=3",
                         "--batch_size=8", "--lr=1e-3", "--log_every=1"]) == 0
    saved = (out / "config.yaml").read_text()     # left to the preset, the note says what it was
    assert yaml.safe_load(saved)["unlearn"]["objective"] is None
    assert "#   unlearn.objective: push" in saved
    epochs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()
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
        "--unlearn.weights=[1,1,2,2]", "--noise.use_image=True", "--noise.use_text=True",
        "--unlearn.objective=push", "--unlearn.original=runs/o/model", "--train.lr=1e-4",
        "--data.image_size=2048", "--data.crop_size=2048", "--data.val_fraction=0.0",
        "--unlearn.retention_cap=1.0"])
    cfg = load_config(ExperimentConfig, None, tail[1:])
    assert cfg.unlearn.weights == [1, 1, 2, 2] and cfg.unlearn.objective == "push"
    # a macro the agent left unfilled, with no run parameters to read it from: refused
    monkeypatch.delenv("WANDB_SWEEP_PARAM_PATH", raising=False)
    with pytest.raises(ConfigError, match=r"^--alpha=\$\{alpha\}: a macro no agent filled"):
        command("training/forgetmi_partial.py", ["--alpha=${alpha}", "--do_train"])
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
    job = shim.stdout.split(" launch/unlearn.py ", 1)[1].split()
    assert job[-2:] == ["--train.lr=1e-5", "--unlearn.weights=[1,1,2,2]"]
    assert "--data.image_size=2048" in job and "--unlearn.retention_cap=1.0" in job


def test_the_release_file_gives_the_same_runs_offline_under_the_agent_and_converted(
        demo_data, tmp_path, monkeypatch, caplog):
    """One file, three ways to run it, the same runs with the same meaning: ``forgetmi sweep``
    on the release's file, ``wandb agent`` on it (its command passes neither use_noise nor
    validation_ratio: the release read them from wandb.config), and its conversion."""
    config = release_command_file(tmp_path, demo_data.root, tmp_path / "original")
    converted = tmp_path / "forgetmi.yaml"
    assert cli_main(["convert-sweep", str(config), str(converted)]) == 0
    assert yaml.safe_load(converted.read_text())["method"] == "grid"   # no --count needed
    offline = expand(load_sweep(config), tmp_path / "a")
    ours = expand(load_sweep(converted), tmp_path / "b")
    assert len(offline) == len(ours) == 2
    for number, (run, mine) in enumerate(zip(offline, ours)):
        expected = settings(run.config)
        assert settings(mine.config) == expected
        under_agent = agent_config(config, run.params, tmp_path / f"r{number}", monkeypatch)
        assert under_agent == expected, {k: (under_agent[k], v) for k, v in expected.items()
                                         if under_agent[k] != v}
        assert agent_config(converted, mine.params, tmp_path / f"c{number}",
                            monkeypatch) == expected
        # What the release meant: push from the noisy copy (still perturbed), 2048² crops, the
        # retention hinge, every retain row.
        assert expected["unlearn"]["objective"] == "push"
        assert expected["noise"]["use_image"] is expected["noise"]["use_text"] is True
        assert expected["noise"]["image_std"] == 0.1 and expected["noise"]["text_level"] == 0.5
        assert expected["data"]["image_size"] == expected["data"]["crop_size"] == 2048
        assert expected["unlearn"]["retention_cap"] == 1.0
        assert expected["data"]["val_fraction"] == 0
    assert {r.config.train.lr for r in offline} == {1e-4, 1e-5}
    assert "{'" not in caplog.text and "unknown config key" not in caplog.text


def test_use_noise_false_perturbs_the_noisy_copy_and_pushes(demo_data, tmp_path):
    from forgetmi.data.dataset import EdemaDataset
    from forgetmi.data.prepare import ensure_caches, load_partitions, noisy_forget_dataset
    from forgetmi.losses.forgetmi import LossWeights, forgetmi_loss
    from forgetmi.models.joint import ModelOutput

    translated, _, _ = translate({"use_noise": False, "noise_mean": 0, "noise_std": 0.3,
                                  "text_noise_level": 0.5, "validation_ratio": 0.1,
                                  "alpha": 1, "beta": 1, "theta": 2, "gamma": 2},
                                 release_program=True)
    cfg = load_config(ExperimentConfig, None, [
        *run_arguments(translated), f"--data.root={demo_data.root}", "--text_encoder=tiny",
        f"--data.cache_dir={tmp_path / 'cache'}", "--data.image_size=64", "--data.crop_size=64"])
    assert cfg.unlearn.objective == "push"
    assert cfg.noise.use_image and cfg.noise.use_text
    assert (cfg.noise.image_std, cfg.noise.image_mean, cfg.noise.text_level) == (0.3, 0, 0.5)
    data = ensure_caches(load_partitions(cfg.data, cfg.seed), cfg.model.text_encoder)
    parts = data.partitions
    # validation_ratio: the release folded its validation rows back; every retain row is used
    assert parts.validation.empty
    assert len(parts.retain) + len(parts.forget) + len(parts.test) == len(data.split)
    clean = EdemaDataset(parts.forget, data.image_cache, data.token_cache)
    noisy = noisy_forget_dataset(cfg, data)
    pairs = [(clean[i], noisy[i]) for i in range(len(clean))]
    assert all(not torch.equal(a["image"], b["image"]) for a, b in pairs)      # image sigma
    assert sum(not torch.equal(a["input_ids"], b["input_ids"]) for a, b in pairs) \
        > len(pairs) // 2                                                    # text noise
    # The sign: UU and MU (forget vs the original's noisy copy) enter the total negated.
    near, far = torch.zeros(2, 4), torch.ones(2, 4)

    def out(x):
        return ModelOutput(image_embedding=x, text_embedding=x, joint_embedding=x)
    weights = LossWeights(*cfg.unlearn.weights)
    total_near, _ = forgetmi_loss(out(near), out(near), out(near), out(near), weights,
                                  cfg.unlearn.objective)
    total_far, _ = forgetmi_loss(out(far), out(near), out(near), out(near), weights,
                                 cfg.unlearn.objective)
    assert total_far < total_near


def test_release_settings_that_cannot_be_honoured_are_refused(demo_data, tmp_path):
    with pytest.raises(ConfigError) as err:
        translate({"output_channel_encoding": "multilabel"}, release_program=True)
    message = str(err.value)
    assert message.startswith("output_channel_encoding: 'multilabel' cannot be honoured")
    assert "multiclass" in message and "\n" not in message and len(message) < 300
    with pytest.raises(ConfigError, match="bert_pool_use_img: .* cannot be honoured"):
        translate({"bert_pool_use_img": "true"}, release_program=True)
    assert translate({"output_channel_encoding": "multiclass", "bert_pool_use_img": False},
                     release_program=True)[1] == {
        "output_channel_encoding": "the heads are always multiclass",
        "bert_pool_use_img": "the text encoder pools as the trained model does"}
    config = release_file(tmp_path, demo_data.root, tmp_path / "original")
    config.write_text(config.read_text().replace('value: "multiclass"', 'value: "multilabel"'))
    with pytest.raises(ConfigError, match="cannot be honoured"):
        expand(load_sweep(config), tmp_path / "a")
    assert cli_main(["convert-sweep", str(config), str(tmp_path / "converted.yaml")]) == 2
    assert not (tmp_path / "converted.yaml").exists()


def test_converted_comments_say_what_changed_in_meaning(demo_data, tmp_path):
    config = release_command_file(tmp_path, demo_data.root, tmp_path / "original")
    converted = tmp_path / "forgetmi.yaml"
    assert cli_main(["convert-sweep", str(config), str(converted)]) == 0
    text = " ".join(line.lstrip("# ").strip() for line in converted.read_text().splitlines()
                    if line.startswith("#"))
    for phrase in ("learning_rate -> train.lr: the release stepped AdamW once per epoch on the "
                   "gradients summed", "(unlearn_epochs 30 = 29 updates), with no clipping",
                   "BatchNorm in train mode", "a different schedule",
                   "unlearn_epochs -> train.epochs:", "use_noise -> unlearn.objective: true: "
                   "pull, false: push", "the noisy copy is perturbed either way",
                   "validation_ratio -> data.val_fraction: 0:", "every retain row is used",
                   "base_model_path -> unlearn.original: a forgetmi model folder",
                   "forgetmi import-checkpoint", "scheduler -> train.scheduler:",
                   "data.image_size = 2048:", "data.crop_size = 2048:",
                   "unlearn.retention_cap = 1.0:", "noise.use_image = true:",
                   "the release's random over finite values without run_cap"):
        assert phrase in text, phrase
