"""Forget-MI unlearning through the shared engine, in-process on the generated data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from forgetmi.jobs.unlearn import main as unlearn_main
from tests.originals import TINY

COMMON = [*TINY, "--log_every=1"]


@pytest.fixture(scope="module")
def original(small_original):
    return small_original


def unlearn(demo_data, original, out, *extra):
    return unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={out}",
                         f"--original={original}", *COMMON, "--epochs=4", "--lr=1e-3", *extra])


def epoch_terms(out):
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [r for r in lines if "epoch/uu" in r]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_pull_unlearning_moves_forget_embeddings_and_keeps_retain(demo_data, original, tmp_path):
    out = tmp_path / "pull"
    assert unlearn(demo_data, original, out, "--preset=unimodal") == 0
    epochs = epoch_terms(out)
    assert len(epochs) == 4
    assert epochs[-1]["epoch/uu"] < 0.9 * epochs[0]["epoch/uu"]  # pulled towards noisy targets
    assert epochs[-1]["epoch/ur"] < epochs[-1]["epoch/uu"]
    timing = json.loads((out / "timing.json").read_text())
    from forgetmi.data import formats
    forget = formats.read_forget_set(demo_data.forget_sets[10])
    assert timing["rows"]["forget"] == timing["rows"]["noisy_forget"] == len(forget)
    assert timing["eval_seconds"] == 0.0 and timing["train_seconds"] > 0
    before, after = weights(original), weights(out / "model")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # finished: the model is what the run leaves, not its optimizer state
    assert not (out / "checkpoints").exists()
    model_bytes = (out / "model" / "model.safetensors").stat().st_size
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 1.1 * model_bytes
    # the saved config leaves the objective to the preset: reused for the no-noise ablation,
    # it pushes as that preset does
    from forgetmi.config import ExperimentConfig, load_config
    saved = load_config(ExperimentConfig, out / "config.yaml")
    assert saved.unlearn.objective is None and saved.unlearn.effective_objective == "pull"
    reused = load_config(ExperimentConfig, out / "config.yaml", ["--preset=no-noise"])
    assert reused.unlearn.effective_objective == "push"


def test_same_seed_same_unlearned_weights(demo_data, original, tmp_path):
    for name in ("a", "b"):
        assert unlearn(demo_data, original, tmp_path / name, "--epochs=1") == 0
    a, b = weights(tmp_path / "a" / "model"), weights(tmp_path / "b" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_push_variant_drives_forget_embeddings_away(demo_data, original, tmp_path):
    out = tmp_path / "push"
    assert unlearn(demo_data, original, out, "--objective=push") == 0
    epochs = epoch_terms(out)
    assert epochs[-1]["epoch/uu"] > epochs[0]["epoch/uu"]


def test_clear_errors(demo_data, tmp_path, caplog):
    assert unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={tmp_path}",
                         "--wandb=disabled"]) == 2
    assert "unlearn.original" in caplog.text
    assert unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={tmp_path}",
                         f"--original={tmp_path}", "--preset=best", "--wandb=disabled"]) == 2


def test_a_method_trains_only_what_its_loss_reaches(demo_data, original, tmp_path, caplog,
                                                    monkeypatch):
    """Forget-MI compares embeddings: the three heads are frozen, recorded and left as they were.
    A method that leaves them trainable without reaching them is stopped at its first update."""
    out = tmp_path / "heads"
    assert unlearn(demo_data, original, out, "--epochs=1", "--max_steps=2") == 0
    record = json.loads((out / "trainable.json").read_text())
    assert record["frozen_modules"] == ["img_model.fc1", "text_model.classifier", "joint_head"]
    assert "forgetmi trains" in caplog.text and "frozen: img_model.fc1" in caplog.text
    before, after = weights(original), weights(out / "model")
    assert all(torch.equal(before[k], after[k]) for k in record["frozen"])
    assert all(not torch.equal(before[k], after[k]) for k in record["trainable"])

    from forgetmi.unlearning.forgetmi_method import ForgetMI
    monkeypatch.setattr(ForgetMI, "reads", None)
    assert unlearn(demo_data, original, tmp_path / "undeclared", "--epochs=1") == 2
    assert "its loss reaches no trainable parameter in img_model.fc1, text_model.classifier, " \
           "joint_head" in caplog.text
    assert not (tmp_path / "undeclared" / "model").exists()


def test_noisy_forget_copy_follows_the_run_seed_unless_noise_seed_is_set(monkeypatch):
    """Three seeds must not share one noisy copy; an explicit noise.seed still pins it."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    import forgetmi.data.dataset
    from forgetmi.config import load_config
    from forgetmi.data.prepare import noisy_forget_dataset

    # Stand-in dataset: keeps the perturber the real function builds, reads no cache.
    monkeypatch.setattr(forgetmi.data.dataset, "EdemaDataset",
                        lambda *args, perturb=None, **kwargs: perturb)
    data = SimpleNamespace(partitions=SimpleNamespace(forget=None), image_cache=None,
                           token_cache=None, reports=pd.DataFrame({"study_id": [], "text": []}))
    grey = np.full((8, 8), 0.5, dtype=np.float32)

    def noisy_image(*overrides):
        cfg = load_config(overrides=["--data.synonyms=null", *overrides])
        return noisy_forget_dataset(cfg, data).image(grey, "dicom-a")

    assert not np.array_equal(noisy_image("--seed=1"), noisy_image("--seed=2"))
    assert np.array_equal(noisy_image("--seed=2"), noisy_image("--seed=2"))
    assert np.array_equal(noisy_image("--seed=1", "--noise.seed=5"),
                          noisy_image("--seed=2", "--noise.seed=5"))
