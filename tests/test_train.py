"""The training engine in-process on the generated data: learning, outputs, resume, idempotence."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from forgetmi.jobs.train import main

BASE = ["--text_encoder=tiny", "--image_size=64", "--batch_size=8", "--eval_batch_size=32",
        "--wandb=disabled", "--log_every=1", "--warmup_ratio=0", "--seed=0"]


def run(data, out, *extra):
    return main([f"--data.root={data.root}", f"--output_dir={out}", *BASE, *extra])


def weights(folder):
    return load_file(str(folder / "model" / "model.safetensors"))


def records(folder):
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    assert run(demo_data, out, "--epochs=4", "--checkpoint_every=4", "--lr=1e-3") == 0
    return out


def test_training_learns_and_writes_its_outputs(demo_data, trained):
    steps = [r for r in records(trained) if "train/loss" in r]
    first = [r["train/loss"] for r in steps if r["train/epoch"] == 0]
    last = [r["train/loss"] for r in steps if r["train/epoch"] == 3]
    assert len(first) == len(last) >= 8
    # The three heads' cross-entropy over an epoch falls; the ranking hinge on this tiny model
    # is too noisy from epoch to epoch to show learning within four epochs.
    epochs = [r for r in records(trained) if "epoch/ce_joint" in r]
    ce = [r["epoch/ce_image"] + r["epoch/ce_text"] + r["epoch/ce_joint"] for r in epochs]
    assert len(ce) == 4 and ce[-1] < 0.95 * ce[0], ce
    timing = json.loads((trained / "timing.json").read_text())
    assert timing["world_size"] == 1 and timing["ranks_agree"] is True
    assert timing["epochs_run"] == 4 and timing["updates"] == len(steps)
    assert timing["rows"]["train"] > 0 and timing["train_seconds"] > 0
    for name in ("config.yaml", "model/model.safetensors", "model/config.json", "best",
                 "train_log.jsonl"):
        assert (trained / name).exists(), name
    # finished: the model stays, the checkpoint (weights and optimizer state) is deleted
    assert not (trained / "checkpoints").exists() and not (trained / "metrics.jsonl").exists()
    # the data is named from anywhere: a copied run folder finds it
    import yaml
    assert yaml.safe_load((trained / "config.yaml").read_text())["data"]["root"] == \
        str(demo_data.root.absolute())
    val = [r for r in records(trained) if "val/joint_auc" in r]
    assert len(val) == 4 and all(0 <= r["val/joint_auc"] <= 1 for r in val)


def test_final_model_loads_with_named_outputs(trained):
    from forgetmi.models import JointModel
    model = JointModel.from_pretrained(trained / "model").eval()
    out = model(torch.rand(2, 1, 64, 64), torch.randint(0, 100, (2, 12)),
                torch.ones(2, 12, dtype=torch.long))
    assert out.joint_embedding.shape == (2, 768) and out.text_logits.shape == (2, 4)


def test_finished_run_is_not_rerun(demo_data, trained, caplog):
    before = weights(trained)
    lines = len(records(trained))
    assert run(demo_data, trained, "--epochs=4", "--checkpoint_every=4", "--lr=1e-3") == 0
    assert "already finished" in caplog.text
    after = weights(trained)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(records(trained)) == lines
    # where and how it logs may change; what it trains may not: refused in one line, the run
    # folder left describing the model it holds
    caplog.clear()
    assert run(demo_data, trained, "--epochs=4", "--checkpoint_every=4", "--lr=1e-3",
               "--log_every=3", "--noise.image_std=0.3") == 0   # nor what training never reads
    recorded = (trained / "config.yaml").read_bytes()
    caplog.clear()
    assert run(demo_data, trained, "--epochs=4", "--checkpoint_every=4", "--lr=0.05") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "train.lr 0.001 -> 0.05" in errors[0], errors
    assert "already finished" not in caplog.text
    assert (trained / "config.yaml").read_bytes() == recorded


def test_retrain_uses_retain_rows_only(demo_data, tmp_path, trained):
    out = tmp_path / "retrain"
    assert run(demo_data, out, "--epochs=1", "--max_steps=2", "--mode=retrain") == 0
    retrain_rows = json.loads((out / "timing.json").read_text())["rows"]["train"]
    train_rows = json.loads((trained / "timing.json").read_text())["rows"]["train"]
    from forgetmi.data import formats
    forget = formats.read_forget_set(demo_data.forget_sets[10])
    assert train_rows - retrain_rows == len(forget)


def test_resume_mid_epoch_equals_uninterrupted(demo_data, tmp_path, caplog):
    args = ["--epochs=2", "--checkpoint_every=3", "--early_stopping_patience=0"]
    # the three latest checkpoints kept (where a run keeps its checkpoints changes nothing in it)
    assert run(demo_data, tmp_path / "straight", *args, "--keep_checkpoints=3") == 0
    updates = json.loads((tmp_path / "straight/timing.json").read_text())["updates"]
    kept = sorted(p.name for p in (tmp_path / "straight/checkpoints").iterdir())
    assert len(kept) == 3 and kept[0] == "latest", kept
    first = sum(1 for r in records(tmp_path / "straight")
                if "train/loss" in r and r["train/epoch"] == 0)
    saved_at = sorted(set(range(3, updates + 1, 3)) | {first, updates})  # every 3, epoch ends
    assert [int(k.split("-")[1]) for k in kept[1:]] == saved_at[-3:-1], (kept, saved_at)
    assert all((tmp_path / "straight/checkpoints" / k / "manifest.json").is_file() for k in kept)
    # crash after update 7: the last checkpoint is update 6, in the middle of an epoch
    assert run(demo_data, tmp_path / "resumed", *args, "--stop_after=7") == 3
    latest = tmp_path / "resumed/checkpoints/latest"
    state = json.loads((latest / "trainer_state.json").read_text())
    assert state["updates"] == 6 and state["step"] > 0 and not state["done"]
    # resumed with another learning rate: refused in one line naming the key and the way out,
    # the checkpoint left as it was
    saved = (latest / "trainer_state.json").read_bytes()
    caplog.clear()
    assert run(demo_data, tmp_path / "resumed", *args, "--lr=0.05") == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "train.lr 0.0001 -> 0.05" in error and "--output_dir" in error, error
    assert "--resume=false" in error and len(error) < 300 and "\n" not in error, error
    assert (latest / "trainer_state.json").read_bytes() == saved
    # where it checkpoints may change, and what training never reads (unlearning settings)
    assert run(demo_data, tmp_path / "resumed", *args, "--checkpoint_every=4",
               "--preset=retention") == 0
    assert not (tmp_path / "resumed/checkpoints").exists()   # finished: only the model kept
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    steps = [r["step"] for r in records(tmp_path / "resumed") if "train/loss" in r]
    assert steps[:7] == list(range(1, 8)) and steps[7] == 7  # update 7 redone after the resume


def test_a_log_of_a_run_before_the_rename_is_read(tmp_path):
    """The training log is train_log.jsonl (beside the evaluation's metrics.json); a run made
    before, whose log is metrics.jsonl, is read, and continued, in its own."""
    from forgetmi.hpc.sweep import metric_value
    from forgetmi.utils.run_folder import RunFolder
    from forgetmi.utils.tracking import Tracker
    from forgetmi.config import TrackingConfig

    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.9}\n')
    assert RunFolder(old).train_log == old / "metrics.jsonl"
    tracker = Tracker(old, TrackingConfig(wandb="disabled"), {})
    tracker.log({"train/loss": 0.5}, 2)
    assert [r["train/loss"] for r in RunFolder(old).train_records()] == [0.9, 0.5]
    assert metric_value(old, "train/loss") == 0.5 and not (old / "train_log.jsonl").exists()
    new = tmp_path / "new"
    Tracker(new, TrackingConfig(wandb="disabled"), {}).log({"train/loss": 0.7}, 1)
    assert RunFolder(new).train_log == new / "train_log.jsonl"
    assert metric_value(new, "train/loss") == 0.7


def test_accumulation_and_offline_wandb(demo_data, tmp_path):
    out = tmp_path / "accum"
    assert main([f"--data.root={demo_data.root}", f"--output_dir={out}", "--text_encoder=tiny",
                 "--image_size=64", "--batch_size=4", "--grad_accum=2", "--epochs=1",
                 "--wandb=offline", "--log_every=1", "--early_stopping_patience=0"]) == 0
    timing = json.loads((out / "timing.json").read_text())
    micro_steps = -(-timing["rows"]["train"] // 4)
    assert timing["updates"] == -(-micro_steps // 2)  # one update per two micro-batches
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    from forgetmi.utils.tracking import run_id_for
    # a deterministic id: resumes continue it
    assert runs[0].name.endswith(run_id_for(out, "train", 0))


def test_final_model_is_the_best_validated_epoch_or_the_last(demo_data, trained, tmp_path):
    # best (the default): the written model is the epoch with the highest validation AUC
    val = [r["val/joint_auc"] for r in records(trained) if "val/joint_auc" in r]
    timing = json.loads((trained / "timing.json").read_text())
    assert timing["model_epoch"] == max(range(len(val)), key=lambda e: (val[e], -e))
    best = load_file(str(trained / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], v) for k, v in weights(trained).items())
    # last: the weights the final epoch ended with, whatever the validation said
    out = tmp_path / "last"
    assert run(demo_data, out, "--epochs=2", "--lr=1e-3", "--final_model=last",
               "--checkpoint_every=1000", "--keep_checkpoints=1") == 0
    assert json.loads((out / "timing.json").read_text())["model_epoch"] == 1
    latest = load_file(str(out / "checkpoints" / "latest" / "model.safetensors"))
    model = weights(out)
    assert model.keys() == latest.keys()
    assert all(torch.equal(model[k], latest[k]) for k in model)


def test_final_model_setting_is_checked():
    from forgetmi.config import ConfigError, TrainConfig
    with pytest.raises(ConfigError, match="train.final_model: expected best or last"):
        TrainConfig(final_model="newest")


def test_each_epoch_logs_its_progress(demo_data, tmp_path, caplog):
    """A log file (a Slurm task's, say) shows how far a run is: epoch k/N, the loss, the ETA."""
    import logging
    import re

    with caplog.at_level(logging.INFO, logger="forgetmi"):
        assert run(demo_data, tmp_path / "run", "--epochs=2", "--lr=1e-3",
                   "--checkpoint_every=1000") == 0
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()
             and "ETA" in r.getMessage()]
    assert len(lines) == 2, lines
    for k, line in enumerate(lines, start=1):
        assert re.match(rf"train epoch {k}/2: loss \d+\.\d{{4}}.*\(\d+\.\d s/epoch, ETA \d+ s\)$",
                        line), line
    assert lines[-1].endswith("ETA 0 s)")
    validation = [r.getMessage() for r in caplog.records if "validation" in r.getMessage()]
    assert [v.split(":")[0] for v in validation] == ["train epoch 1/2", "train epoch 2/2"]


def test_a_copied_run_is_evaluated_from_another_directory(demo_data, tmp_path, monkeypatch,
                                                           caplog):
    """A run saves its data's absolute location: started with a relative --data.root, its
    folder copied elsewhere is evaluated from another working directory. A run saved before
    (a relative root) is refused there in one line naming the key to set."""
    import shutil

    import yaml

    from forgetmi.jobs.evaluate import main as evaluate_main

    monkeypatch.chdir(demo_data.root.parent)
    started = tmp_path / "started"
    assert main([f"--data.root={demo_data.root.name}", f"--output_dir={started}", *BASE,
                 "--epochs=1", "--max_steps=2", "--early_stopping_patience=0"]) == 0
    copied = tmp_path / "elsewhere" / "run"
    shutil.copytree(started, copied)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate_main([str(copied), "--bootstrap", "5"]) == 0
    assert json.loads((copied / "metrics.json").read_text())["metrics"]["test"]
    # as an older run recorded it: relative to where it was started
    config = yaml.safe_load((copied / "config.yaml").read_text())
    config["data"]["root"] = demo_data.root.name
    (copied / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    caplog.clear()
    assert evaluate_main([str(copied), "--bootstrap", "5"]) == 2
    assert f"data.root {demo_data.root.name!r} is relative to where the run was started" in \
        caplog.text and "give --data.root=" in caplog.text
    assert evaluate_main([str(copied), "--bootstrap", "5", f"--data.root={demo_data.root}"]) == 0


def test_a_log_file_shows_each_epoch_with_its_loss_and_eta(demo_data, tmp_path):
    """`forgetmi train 2>run.log`, as a Slurm task writes it: plain lines, no bar, one per epoch
    with `epoch k/N`, the loss and the ETA."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    with log.open("w") as stderr:
        done = subprocess.run([sys.executable, "-m", "forgetmi.cli", "train",
                               f"--data.root={demo_data.root}", f"--output_dir={tmp_path / 'run'}",
                               *BASE, "--epochs=2", "--checkpoint_every=1000"],
                              stderr=stderr, stdout=subprocess.DEVNULL, timeout=300, env=env)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    progress = [line for line in text.splitlines() if "ETA" in line]
    assert len(progress) == 2, text[-3000:]
    for k, line in enumerate(progress, start=1):
        assert re.search(rf"INFO forgetmi\.engine: train epoch {k}/2: loss \d+\.\d{{4}}.*ETA \d+ s\)$",
                         line), line
    assert "\r" not in text and "it/s" not in text      # no progress bar in a file
