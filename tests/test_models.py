"""The joint model: shapes, named outputs, exact save/load, and import of the published format."""

from __future__ import annotations

import pickle

import pytest
import torch

from forgetmi.cli import main
from forgetmi.config import ModelConfig
from forgetmi.errors import ForgetMIError
from forgetmi.models import JointModel
from forgetmi.models.checkpoint import import_published_checkpoint
from tests.published import published_folder


def batch(size=64, n=2, vocab=100, length=16):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, size, size, generator=g),
            torch.randint(5, vocab, (n, length), generator=g),
            torch.ones(n, length, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return JointModel(ModelConfig(text_encoder="tiny")).eval()


@pytest.mark.parametrize("size", [64, 256])
def test_named_outputs_and_fixed_embedding_width(tiny, size):
    out = tiny(*batch(size))
    assert set(out.keys()) == {"image_embedding", "text_embedding", "joint_embedding",
                               "image_logits", "text_logits", "joint_logits"}
    for key in ("image_embedding", "text_embedding", "joint_embedding"):
        assert out[key].shape == (2, 768)
    assert out.joint_logits.shape == (2, 4) and torch.isfinite(out.joint_logits).all()


def test_image_encoder_matches_the_paper_at_2048():
    model = JointModel(ModelConfig(text_encoder="tiny")).img_model.eval()
    maps = {}
    model.layer7.register_forward_hook(lambda m, i, o: maps.update(last=o.shape))
    model.layer1.register_forward_hook(lambda m, i, o: maps.update(first=o.shape))
    with torch.no_grad():
        embedding, logits = model(torch.rand(1, 1, 2048, 2048))
    assert maps["first"] == (1, 8, 256, 256)   # stem /4, stage 1 /2
    assert maps["last"] == (1, 192, 4, 4)      # 2048 / (4 * 2**7)
    assert embedding.shape == (1, 768) and logits.shape == (1, 4)


def test_save_and_load_round_trip_exactly(tiny, tmp_path):
    with torch.no_grad():
        tiny.fusion.scale.fill_(0.37)
    tiny.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json",
                                                                      "model.safetensors"]
    loaded = JointModel.from_pretrained(tmp_path / "model").eval()
    for (k, a), (_, b) in zip(tiny.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = batch(64)
    assert torch.equal(tiny(*x).joint_logits, loaded(*x).joint_logits)


def test_truncated_weights_are_refused(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ForgetMIError, match="unreadable or truncated"):
        JointModel.from_pretrained(tmp_path / "model")


def test_published_key_names(tmp_path):
    _, _, state = published_folder(tmp_path)
    for key in ("text_model.bert.embeddings.LayerNorm.gamma", "text_model.bert.pooler.dense.weight",
                "text_model.classifier.weight", "img_model.conv1.weight", "img_model.bn1.running_var",
                "img_model.layer1.0.conv1.weight", "img_model.layer7.1.bn2.bias",
                "img_model.layer4.0.downsample.0.weight", "img_model.layer4.0.downsample.1.weight",
                "img_model.fc1.weight", "classifier.weight"):
        assert key in state, key
    assert state["classifier.weight"].shape == (4, 768)


def test_import_published_checkpoint(tmp_path):
    source, folder, _ = published_folder(tmp_path)
    model = import_published_checkpoint(folder).eval()
    model.allow_other_image_size = True   # release weights at 64 px: a test on small images
    x = batch(64)
    a, b = source(*x), model(*x)
    assert torch.equal(a.image_logits, b.image_logits)
    assert torch.equal(a.text_logits, b.text_logits)
    assert torch.equal(source.joint_head.weight, model.joint_head.weight)
    # through the CLI, into our own format, and back
    assert main(["import-checkpoint", str(folder), str(tmp_path / "ours")]) == 0
    again = JointModel.from_pretrained(tmp_path / "ours", allow_other_image_size=True).eval()
    assert torch.equal(again(*x).text_logits, a.text_logits)


def test_import_reports_missing_and_unexpected_keys(tmp_path):
    _, folder, state = published_folder(tmp_path)
    del state["img_model.fc1.weight"]
    state["img_model.layer8.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ForgetMIError) as err:
        import_published_checkpoint(folder)
    message = str(err.value)
    assert "1 missing key(s), first img_model.fc1.weight" in message
    assert "1 unexpected key(s), first img_model.layer8.0.conv1.weight" in message
    assert "\n" not in message and len(message) < 300, message


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_import_refuses_pickled_objects(tmp_path):
    _, folder, state = published_folder(tmp_path)
    state["evil"] = Payload()
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump(state, fh)  # a plain pickle: not even a torch zip file
    with pytest.raises(ForgetMIError, match="refused to load|unreadable"):
        import_published_checkpoint(folder)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ForgetMIError, match="refused to load"):
        import_published_checkpoint(folder)
