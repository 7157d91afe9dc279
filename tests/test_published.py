"""Published weights work unchanged: preprocessing, tokenizer, image size, import, end to end."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from forgetmi.cli import main
from forgetmi.config import DataConfig, ExperimentConfig
from forgetmi.data.images import decode_image, load_image, write_dicom
from forgetmi.errors import ForgetMIError
from forgetmi.config import ModelConfig
from forgetmi.models import JointModel
from forgetmi.models.checkpoint import import_published_checkpoint
from forgetmi.models.provenance import align_with_model
from tests.published import MINILM_VOCAB, published_folder, published_state, tokenizer_folder
from tests.test_bad_input import refused
from tests.test_images import release_preprocess

TINY = {"widths": [4, 4, 4, 8, 8, 8, 8], "hidden": 32, "vocab": MINILM_VOCAB}  # 32-d embeddings


# ----------------------------------------------------------------------------- preprocessing

def test_release_mode_feeds_the_stored_pixels_divided_by_their_max(tmp_path):
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 4096, (60, 44), dtype=np.uint16)
    pixels[10, 10] = 4000
    path = write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", rescale=(2, -1000))
    np.testing.assert_array_equal(decode_image(path, "release"), pixels)
    release = load_image(path, 64, mode="release")
    np.testing.assert_array_equal(release, release_preprocess(pixels, 64))
    ours = load_image(path, 64)  # inverted, rescaled, shifted: a different picture
    assert np.abs(ours - release).max() > 0.5
    with pytest.raises(ValueError, match="choose between forgetmi, release"):
        load_image(path, 64, mode="raw")


# ------------------------------------------------------------------------------------- import

def test_imported_weights_are_bit_identical_and_imports_repeat(tmp_path, caplog):
    source, folder, state = published_folder(tmp_path, **TINY)
    with caplog.at_level(logging.INFO, logger="forgetmi"):
        a = import_published_checkpoint(folder)
    assert "joint fusion" in caplog.text and "new" in caplog.text
    b = import_published_checkpoint(folder)
    imported = a.state_dict()
    for key, value in published_state(source, old_names=False).items():
        key = "joint_head." + key[len("classifier."):] if key.startswith("classifier.") else key
        assert torch.equal(imported[key], value), key
    assert len(state) == len([k for k in imported if not k.startswith("fusion.")])
    for key, value in b.state_dict().items():  # the new fusion too: seeded, not random
        assert torch.equal(imported[key], value), key
    assert a.config.origin == "release" and a.config.image_preprocessing == "release"
    assert a.config.image_widths == TINY["widths"] and a.config.text_encoder is None


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path):
    _, folder, _ = published_folder(tmp_path, vocab=100, with_vocab=False)
    with pytest.raises(ForgetMIError) as err:
        import_published_checkpoint(folder)
    assert "30522 tokens" in str(err.value) and "100 rows" in str(err.value)
    assert "--text-encoder=" in str(err.value)
    small = tokenizer_folder(tmp_path / "small-vocab", 50)
    with pytest.raises(ForgetMIError, match="50 tokens .* 100 rows"):
        import_published_checkpoint(folder, text_encoder=str(small))
    right = tokenizer_folder(tmp_path / "right-vocab", 100)
    model = import_published_checkpoint(folder, text_encoder=str(right))
    assert model.config.text_encoder == str(right.resolve())


def test_unlearned_epoch_files_import_with_the_original_config(tmp_path, caplog):
    _, original, state = published_folder(tmp_path, **TINY)
    unlearned = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    epoch = tmp_path / "unlearned" / "epoch_3"
    epoch.mkdir(parents=True)
    torch.save({"module." + k: v for k, v in unlearned.items()}, epoch / "model_state_dict.pth")
    assert main(["import-checkpoint", str(epoch / "model_state_dict.pth"), str(tmp_path / "x")]) == 2
    assert "--config ORIGINAL/config.json" in caplog.text
    assert main(["import-checkpoint", str(epoch / "model_state_dict.pth"), str(tmp_path / "ours"),
                 "--config", str(original / "config.json")]) == 0
    weights = load_file(str(tmp_path / "ours" / "model.safetensors"))
    assert torch.equal(weights["img_model.fc1.weight"], unlearned["img_model.fc1.weight"])
    assert torch.equal(weights["text_model.bert.embeddings.LayerNorm.weight"],
                       unlearned["text_model.bert.embeddings.LayerNorm.gamma"])


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_the_refusal_names_the_offending_global_without_escapes(tmp_path):
    _, folder, state = published_folder(tmp_path, **TINY)
    torch.save({**state, "evil": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ForgetMIError) as err:
        import_published_checkpoint(folder)
    message = str(err.value)
    assert "GLOBAL print was not an allowed global" in message
    assert "\x1b" not in message and "\n" not in message


class Blocked:
    def __reduce__(self):   # a module torch blocks outright, not merely one it does not allow
        return (os.system, ("touch this-must-never-exist",))


def test_a_blocked_module_is_refused_without_advice_to_load_unsafely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, folder, state = published_folder(tmp_path, **TINY)
    torch.save({**state, "evil": Blocked()}, folder / "pytorch_model.bin")
    with pytest.raises(ForgetMIError) as err:
        import_published_checkpoint(folder)
    message = str(err.value)
    assert "refused to load" in message and "is blocked" in message
    assert "system" in message                                  # the global it names
    assert "weights_only=False" not in message and "weights_only" not in message
    assert "\x1b" not in message and "\n" not in message and len(message) < 300
    assert not (tmp_path / "this-must-never-exist").exists()


def test_imported_weights_are_readable_as_any_new_file_is(tmp_path):
    _, folder, _ = published_folder(tmp_path, **TINY)
    before = os.umask(0o022)
    try:
        assert main(["import-checkpoint", str(folder), str(tmp_path / "a")]) == 0
        os.umask(0o002)                                          # a group-shared cluster's
        assert main(["import-checkpoint", str(folder), str(tmp_path / "b")]) == 0
    finally:
        os.umask(before)
    for name, mode in (("a", 0o644), ("b", 0o664)):
        for file in ("model.safetensors", "config.json"):
            assert oct((tmp_path / name / file).stat().st_mode & 0o777) == oct(mode), (name, file)
        assert (tmp_path / name).stat().st_mode & 0o777 == mode | 0o111


def test_release_weights_run_only_at_2048_in_the_library_too(tmp_path):
    _, folder, _ = published_folder(tmp_path, **TINY)
    model = import_published_checkpoint(folder).eval()
    ids, mask = torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)
    with pytest.raises(ForgetMIError) as err:
        model(torch.rand(1, 1, 1024, 1024), ids, mask)
    message = str(err.value)
    assert "1024×1024" in message and "2048" in message and "allow_other_image_size" in message
    assert "\n" not in message and len(message) < 300
    with torch.no_grad():
        assert model(torch.rand(1, 1, 2048, 2048), ids, mask).image_embedding.shape == (1, 32)
    model.save_pretrained(tmp_path / "imported")
    with pytest.raises(ForgetMIError, match="2048"):
        JointModel.from_pretrained(tmp_path / "imported")(torch.rand(1, 1, 64, 64), ids, mask)
    allowed = JointModel.from_pretrained(tmp_path / "imported", allow_other_image_size=True)
    with torch.no_grad():
        assert allowed.eval()(torch.rand(1, 1, 64, 64), ids, mask).image_embedding.shape == (1, 32)
    saved = json.loads((tmp_path / "imported" / "config.json").read_text())["forgetmi_model"]
    assert saved["allow_other_image_size"] is False             # a run's choice, never recorded
    torch.manual_seed(0)
    ours = JointModel(ModelConfig(text_encoder="tiny"))           # forgetmi's: any size
    assert ours.eval()(torch.rand(1, 1, 64, 64), ids, mask).image_embedding.shape == (1, 768)


def test_a_release_folder_given_as_the_original_says_to_import_it(tmp_path, caplog):
    _, folder, _ = published_folder(tmp_path, **TINY)
    message = refused(caplog, ["unlearn", f"--original={folder}",
                               f"--output_dir={tmp_path / 'out'}", "--wandb=disabled"],
                      folder, str(folder), "forgetmi import-checkpoint", "unlearn.original")
    assert "not a forgetmi model config" not in message
    with pytest.raises(ForgetMIError, match="forgetmi import-checkpoint"):
        JointModel.from_pretrained(folder)
    epoch = tmp_path / "unlearned" / "epoch_3"                  # a bare weights file's folder
    epoch.mkdir(parents=True)
    (folder / "pytorch_model.bin").rename(epoch / "model_state_dict.pth")
    with pytest.raises(ForgetMIError, match="--config ORIGINAL/config.json"):
        align_with_model(ExperimentConfig(), epoch)


def test_an_imported_original_runs_the_release_sweep_as_it_is(tmp_path):
    """The release's runs name no image size: its translation sets its 2048² crops, which an
    imported original needs."""
    from forgetmi.config import load_config
    from forgetmi.hpc.release import translate
    from forgetmi.hpc.sweep import run_arguments

    _, folder, _ = published_folder(tmp_path, **TINY)
    assert main(["import-checkpoint", str(folder), str(tmp_path / "imported")]) == 0
    translated, _, _ = translate({"base_model_path": str(tmp_path / "imported"),
                                  "use_noise": True}, release_program=True)
    cfg = align_with_model(load_config(ExperimentConfig, None, run_arguments(translated)),
                           tmp_path / "imported")
    assert (cfg.data.image_size, cfg.data.crop_size, cfg.data.preprocessing) == \
        (2048, 2048, "release")


def test_the_release_pool_equals_ours_only_on_the_2048_map():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(nn.AdaptiveAvgPool2d(2)(x), nn.AvgPool2d(2)(x))   # 2048² -> 4×4
    y = torch.randn(2, 3, 5, 5)                                          # 2560² -> 5×5
    assert not torch.allclose(nn.AdaptiveAvgPool2d(2)(y), nn.AvgPool2d(2)(y))


# ------------------------------------------------------------------------- model and data agree

def test_a_model_gets_the_preprocessing_and_tokenizer_it_records(tmp_path):
    torch.manual_seed(0)
    JointModel(ModelConfig(text_encoder="tiny")).save_pretrained(tmp_path / "ours")
    cfg = align_with_model(ExperimentConfig(), tmp_path / "ours")
    assert cfg.data.preprocessing == "forgetmi" and cfg.model.text_encoder == "tiny"
    with pytest.raises(ForgetMIError, match="trained on forgetmi image preprocessing"):
        align_with_model(ExperimentConfig(data=DataConfig(preprocessing="release")),
                         tmp_path / "ours")
    other = tokenizer_folder(tmp_path / "other", 50)
    bad = ExperimentConfig(model=replace(ModelConfig(), text_encoder=str(other)))
    with pytest.raises(ForgetMIError, match="not the tokenizer the model was trained with"):
        align_with_model(bad, tmp_path / "ours")


# ---------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    _, folder, _ = published_folder(root, **TINY)
    assert main(["import-checkpoint", str(folder), str(root / "imported")]) == 0
    return root / "imported"


def data_args(demo_data, tmp_path):
    return [f"--data.root={demo_data.root}", f"--data.cache_dir={tmp_path / 'cache'}",
            "--image_size=64"]


def test_evaluate_and_unlearn_a_published_model(demo_data, imported, tmp_path, caplog):
    data = data_args(demo_data, tmp_path)
    # The release never saw 64 px: refused, with the way out in the message.
    assert main(["evaluate", str(imported), *data, "--bootstrap=10"]) == 2
    assert "saw only 2048² crops" in caplog.text and "--allow_other_image_size=true" in caplog.text
    assert main(["evaluate", str(imported), *data, "--data.preprocessing=forgetmi",
                 "--allow_other_image_size=true", "--bootstrap=10"]) == 2
    assert "trained on release image preprocessing" in caplog.text

    small = [*data, "--allow_other_image_size=true"]
    assert main(["evaluate", str(imported), *small, "--bootstrap=10"]) == 0
    result = json.loads((imported / "metrics.json").read_text())
    assert result["model"] == "published" and result["metrics"]["test"]["joint"]["auc"]["value"]
    assert (tmp_path / "cache" / "images-64-crop64-release" / "index.json").is_file()
    assert not (tmp_path / "cache" / "images-64-crop64").exists()

    out = tmp_path / "unlearned"
    assert main(["unlearn", f"--original={imported}", f"--output_dir={out}", *small,
                 "--epochs=1", "--batch_size=8", "--lr=1e-3", "--wandb=disabled",
                 "--warmup_ratio=0", "--early_stopping_patience=0"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["preprocessing"] == "release" and saved["model"]["text_encoder"] is None
    record = json.loads((out / "model" / "config.json").read_text())["forgetmi_model"]
    assert (record["origin"], record["image_preprocessing"]) == ("release", "release")
    before, after = load_file(str(imported / "model.safetensors")), load_file(
        str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert main(["evaluate", str(out), "--bootstrap=10"]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "forgetmi"
