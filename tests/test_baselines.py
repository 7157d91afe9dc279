"""Every unlearning method on the shared engine, in-process on the generated data.

The original model is trained long enough to fit its training rows (forget-set loss well below
the test loss), so forgetting is measurable. Each method must raise the loss of the forget rows
over the original's while keeping test AUC within TOLERANCE of it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from forgetmi.jobs.unlearn import main as unlearn_main
from forgetmi.unlearning import METHODS
from tests.originals import TINY

pytestmark = pytest.mark.slow

COMMON = [*TINY, "--log_every=1"]
TOLERANCE = 0.15   # largest allowed drop of test AUC (joint head) below the original's
MIN_RISE = 0.03    # smallest rise of forget-set cross-entropy (joint head) over the original's

# Per-method settings for a few-epoch CPU run. The literature's defaults are used except where
# a learning rate suited to AdamW on this tiny model is needed (SCRUB's max-steps and random
# labels move fast) and NegGrad+'s β, tuned per dataset in Kurmanji et al.
# CF-k fine-tunes the top groups on retain rows only, and on this stand-in that consolidates the
# forget rows rather than forgetting them (measured: forget CE 0.323 -> 0.290 with k=3, 2 epochs
# at 1e-3); it is held to keeping test performance here, and measured by the benchmark.
# EU-k likewise on the forget set drawn with a holdout (generator 1.1): forget CE 0.563 -> 0.562
# at these settings; on the benchmark it removes part of the attack signal (+0.103 against the
# original's +0.244, benchmarks/RESULTS.md).
NO_FORGETTING_HERE = {"cf-k", "eu-k"}
SETTINGS = {
    "forgetmi": ["--epochs=4", "--lr=1e-3", "--preset=unimodal"],
    "finetune": ["--epochs=2", "--lr=1e-3"],
    "cf-k": ["--epochs=2", "--lr=1e-3", "--k=3"],
    "eu-k": ["--epochs=2", "--lr=1e-3", "--k=3"],
    "neggrad+": ["--epochs=4", "--lr=1e-3", "--neggrad.retain_weight=0.9"],
    "scrub": ["--epochs=2", "--lr=2e-4"],
    "random-label": ["--epochs=4", "--lr=3e-4"],
    "multidelete": ["--epochs=4", "--lr=1e-3"],
}


@pytest.fixture(scope="module")
def trained(fitted_original):
    return fitted_original


def scores(demo_data, model_dir):
    """Joint-head cross-entropy and AUC of a saved model on the forget and test rows."""
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.evaluation.metrics import head_metrics, softmax
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel
    from forgetmi.data.prepare import build_datasets

    cfg = load_config(ExperimentConfig, None, [f"--data.root={demo_data.root}", *COMMON])
    accelerator = build_accelerator(None, 1)
    _, datasets = build_datasets(cfg, accelerator)
    model = JointModel.from_pretrained(model_dir)
    out = {}
    for part in ("forget", "test"):
        p = predict(accelerator, model, datasets[part], 64)
        probs = softmax(p["joint_logits"].astype(np.float64))
        out[f"{part}_ce"] = float(-np.log(probs[np.arange(len(probs)), p["label"]]).mean())
        out[f"{part}_auc"] = head_metrics(p)["joint_auc"]
    return out


@pytest.fixture(scope="module")
def original_scores(demo_data, trained):
    s = scores(demo_data, trained)
    assert s["forget_ce"] < s["test_ce"] - 0.2, s   # the original has fitted its forget rows
    return s


def unlearn(demo_data, original, out, method, *extra):
    return unlearn_main([f"--data.root={demo_data.root}", f"--output_dir={out}",
                         f"--original={original}", *COMMON, f"--method={method}",
                         *SETTINGS[method], *extra])


def test_registry_has_the_papers_baselines():
    assert set(SETTINGS) == set(METHODS)


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_method_forgets_and_keeps_test_performance(demo_data, trained, original_scores,
                                                   tmp_path, method):
    out = tmp_path / method
    assert unlearn(demo_data, trained, out, method) == 0
    after = scores(demo_data, out / "model")
    if method not in NO_FORGETTING_HERE:
        assert after["forget_ce"] > original_scores["forget_ce"] + MIN_RISE, (method, after)
    assert after["test_auc"] > original_scores["test_auc"] - TOLERANCE, (method, after)
    timing = json.loads((out / "timing.json").read_text())
    assert timing["eval_seconds"] == 0.0 and timing["updates"] > 0
    epochs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("epoch/loss" in r for r in epochs)


def test_cf_k_trains_only_the_last_layers(demo_data, trained, tmp_path):
    assert unlearn(demo_data, trained, tmp_path / "cf", "cf-k", "--k=1") == 0
    before, after = load_file(str(trained / "model.safetensors")), \
        load_file(str(tmp_path / "cf" / "model" / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("joint_head", "fusion", "img_model.fc1",
                                         "text_model.classifier", "text_model.proj",
                                         "text_model.bert.pooler")) for k in changed), changed
    # BatchNorm statistics of frozen layers never move
    assert torch.equal(before["img_model.bn1.running_mean"], after["img_model.bn1.running_mean"])


def test_scrub_alternates_max_and_min_steps(demo_data, trained, tmp_path):
    out = tmp_path / "scrub"
    assert unlearn(demo_data, trained, out, "scrub", "--epochs=3", "--scrub.max_epochs=1") == 0
    epochs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()
              if "epoch/loss" in x]
    assert len(epochs) == 3
    assert "epoch/forget_kl" in epochs[0] and "epoch/retain_kl" in epochs[0]
    assert all("epoch/forget_kl" not in e for e in epochs[1:])   # max-steps only in epoch 0
    assert epochs[0]["epoch/forget_kl"] > 0


@pytest.mark.parametrize("method", ["eu-k", "scrub"])
def test_same_seed_same_weights(demo_data, trained, tmp_path, method):
    for name in ("a", "b"):
        assert unlearn(demo_data, trained, tmp_path / name, method, "--epochs=1") == 0
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_retention_cap_is_kept_across_resume(demo_data, trained, tmp_path):
    args = ["--epochs=3", "--retention_cap=0.05", "--checkpoint_every=2"]
    assert unlearn(demo_data, trained, tmp_path / "full", "forgetmi", *args,
                   "--keep_checkpoints=1") == 0
    state = json.loads((tmp_path / "full" / "checkpoints" / "latest" / "trainer_state.json")
                       .read_text())
    epochs = [json.loads(x) for x in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()
              if "epoch/ur" in x]
    caps = state["objective"]["caps"]
    assert caps["ur"] == pytest.approx(epochs[0]["epoch/ur"] + 0.05)
    assert caps["mr"] == pytest.approx(epochs[0]["epoch/mr"] + 0.05)
    # crash in the second epoch, resume: the caps come back from the checkpoint
    assert unlearn(demo_data, trained, tmp_path / "resumed", "forgetmi", *args,
                   "--stop_after=5") == 3
    assert unlearn(demo_data, trained, tmp_path / "resumed", "forgetmi", *args) == 0
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6


def test_unknown_method_and_bad_hyperparameters(demo_data, trained, tmp_path, caplog):
    base = [f"--data.root={demo_data.root}", f"--output_dir={tmp_path / 'x'}",
            f"--original={trained}", *COMMON]
    assert unlearn_main([*base, "--method=sisa"]) == 2
    assert "unknown method 'sisa'" in caplog.text and "scrub" in caplog.text
    assert unlearn_main([*base, "--method=cf-k", "--k=99", "--max_steps=1"]) == 2
    assert "unlearn.last_layers.k" in caplog.text
    assert unlearn_main([*base, "--method=neggrad+", "--neggrad.retain_weight=1.5"]) == 2
    assert "retain_weight" in caplog.text


def test_eu_k_reinitialises_as_the_model_does_at_construction():
    """EU-k redraws the last k groups with the model's own init (Kaiming convs, zero last-BN
    scale, BERT's normal(0, initializer_range)), and puts the fusion scale back to its start."""
    from torchvision.models.resnet import BasicBlock

    from forgetmi.config import ExperimentConfig
    from forgetmi.models import JointModel
    from forgetmi.config import ModelConfig
    from forgetmi.unlearning import method_class

    torch.manual_seed(0)
    model = JointModel(ModelConfig(text_encoder="tiny", fusion_scale_init=0.1))
    with torch.no_grad():  # stand-in for training: every weight and statistic moved
        for p in model.parameters():
            p.fill_(0.37)
            p._is_hf_initialized = True  # as HF's from_pretrained marks loaded weights
        for b in model.buffers():
            if b.is_floating_point():
                b.fill_(0.37)
    cfg = ExperimentConfig()
    cfg.unlearn.last_layers.k = 3  # heads/fusion, image layer7 + BERT layer 1, layer6 + layer 0
    method_class("eu-k")(cfg, {"forget": [0], "retain": [0]}).prepare_model(model)

    assert model.fusion.scale.detach().item() == pytest.approx(0.1)
    image = model.img_model
    for stage in (image.layer7, image.layer6):
        for sub in stage.modules():
            if isinstance(sub, torch.nn.Conv2d):
                fan_out = sub.out_channels * sub.kernel_size[0] * sub.kernel_size[1]
                assert float(sub.weight.detach().std()) == pytest.approx((2 / fan_out) ** 0.5,
                                                                         rel=0.1)
            if isinstance(sub, torch.nn.BatchNorm2d):
                assert torch.all(sub.bias == 0) and torch.all(sub.running_mean == 0)
                assert torch.all(sub.running_var == 1)
            if isinstance(sub, BasicBlock):
                assert torch.all(sub.bn1.weight == 1) and torch.all(sub.bn2.weight == 0)
    std = model.text_model.bert.config.initializer_range
    bert_linears = [m for layer in model.text_model.bert.encoder.layer for m in layer.modules()
                    if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.detach().flatten() for m in bert_linears])
    assert float(weights.std()) == pytest.approx(std, rel=0.1)
    assert all(torch.all(m.bias == 0) for m in bert_linears)
    assert torch.all(image.layer5[0].conv1.weight == 0.37)  # below the last k: untouched
