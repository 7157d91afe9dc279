"""Every job under every shipped launch configuration.

One ``accelerate launch`` per config in ``configs/accelerate/`` (two gloo processes where the
config is distributed) runs train, retrain and every registered unlearning method in turn
(tests/matrix_worker.py), eight optimizer steps each; test_distributed.py reads the same
launches' train runs. For every job: the world size and strategy, every trainable parameter
moved, every frozen one did not, and the ranks ended with the same weights. A new config file or a new registered method joins the matrix by itself.
Mixed precision runs once per precision, on a config that supports it on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgetmi.unlearning import METHODS
from tests.launching import ARGS, CONFIGS, UPDATES, config_path, launch_settings, run_matrix

pytestmark = pytest.mark.distributed

JOBS = ["train", "retrain", *sorted(METHODS)]
DISTRIBUTED_TYPE = {"NO": "NO", "MULTI_GPU": "MULTI_CPU", "DEEPSPEED": "DEEPSPEED"}
# The heads a method that compares embeddings only can never reach.
HEADS = {"img_model.fc1.weight", "img_model.fc1.bias", "text_model.classifier.weight",
         "text_model.classifier.bias", "joint_head.weight", "joint_head.bias"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def initial_weights(run: Path) -> dict[str, torch.Tensor]:
    """The weights training started from: the run's own config and seed, built afresh."""
    from accelerate.utils import set_seed

    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.models import JointModel

    cfg = load_config(ExperimentConfig, str(run / "config.yaml"), [])
    set_seed(cfg.seed)
    return JointModel(cfg.model).state_dict()


def assert_every_job(config: Path, out: Path, updates: int = UPDATES) -> None:
    kind, processes = launch_settings(config)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(JOBS)
    starts = {"train": initial_weights(out / "train")}
    starts["retrain"] = starts["train"]
    original = weights(out / "train")
    for job in JOBS:
        run = out / job
        info = json.loads((run / "timing.json").read_text())
        assert info["world_size"] == processes, (job, info)
        assert info["distributed_type"] == f"DistributedType.{DISTRIBUTED_TYPE[kind]}", (job, info)
        assert info["updates"] == updates, (job, info)
        # ZeRO-3 keeps one sharded copy of the weights: there is nothing replicated to compare.
        assert info["ranks_agree"] is (None if info["zero_stage"] == 3 else True), (job, info)

        record = json.loads((run / "trainable.json").read_text())
        trainable, frozen = set(record["trainable"]), set(record["frozen"])
        before, after = starts.get(job, original), weights(run)
        assert trainable | frozen <= after.keys() and trainable and not trainable & frozen
        moved = {k for k in trainable | frozen if not torch.equal(before[k], after[k])}
        assert trainable - moved == set(), (job, "trainable but unchanged", trainable - moved)
        assert frozen & moved == set(), (job, "frozen but changed", frozen & moved)
        reads = getattr(METHODS.get(job), "reads", None)
        if reads is not None:
            assert frozen == HEADS, (job, frozen)
        elif job in ("cf-k", "eu-k"):
            assert {"img_model.conv1.weight", "text_model.bert.embeddings.word_embeddings.weight"
                    } <= frozen and not frozen & HEADS, (job, record["frozen_modules"])
        else:
            assert frozen == set(), (job, record["frozen_modules"])


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_job_under_every_launch_config(config, matrix_runs):
    assert_every_job(config, matrix_runs(config.stem))


# Mixed precision, once per precision that runs on a CPU. Four image stages at 64 px: with
# seven, the last stages convolve 1x1 maps, where oneDNN's bf16 weight gradients (torch 2.14,
# CPU) come back non-finite. fp16 needs a GPU (benchmarks/gpu_check.sh runs it there).
PRECISIONS = [("ddp", "bf16")]


@pytest.mark.parametrize("config,precision", PRECISIONS, ids=[f"{c}-{p}" for c, p in PRECISIONS])
def test_every_job_in_mixed_precision(config, precision, demo_data, tmp_path):
    run_matrix(config_path(config), demo_data.root, tmp_path, f"--precision={precision}",
               "--model.image_widths=[8,16,32,192]")
    assert_every_job(config_path(config), tmp_path)
    for job in JOBS:
        assert f"precision: {precision}" in (tmp_path / job / "config.yaml").read_text(), job
        # autocast over fp32 weights: what is saved stays fp32
        assert {v.dtype for v in weights(tmp_path / job).values() if v.is_floating_point()} \
            == {torch.float32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where a GPU is")
def test_fp16_without_a_gpu_is_refused_clearly(demo_data, tmp_path, caplog):
    """Accelerate would train in fp32 without saying so; DeepSpeed would fail in BatchNorm."""
    from forgetmi.jobs.train import main as train_main
    code = train_main([f"--data.root={demo_data.root}", f"--output_dir={tmp_path / 'run'}",
                       *ARGS, "--precision=fp16"])
    assert code == 2
    assert "fp16 needs a GPU" in caplog.text and "use bf16" in caplog.text
    assert not (tmp_path / "run" / "model").exists()
