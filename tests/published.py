"""Checkpoints in the published Forget-MI layout (BERT config.json + pytorch_model.bin), for tests.

Key names and nesting are the release's (``text_model.bert.*``, ``text_model.classifier.*``,
``img_model.*``, ``classifier.*``); widths and BERT size can be shrunk so tests stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BertConfig

from forgetmi.config import ModelConfig
from forgetmi.models import JointModel

MINILM_VOCAB = 30522  # the packaged tokenizer's size: such a checkpoint needs no tokenizer folder


def tokenizer_folder(folder: Path, size: int) -> Path:
    """A BERT tokenizer of ``size`` tokens (special tokens, then made-up words)."""
    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + [f"w{i}" for i in range(size - len(special))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def published_state(model: JointModel, old_names: bool = True) -> dict[str, torch.Tensor]:
    """``model``'s weights under the published names (no fusion; joint head = classifier)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("fusion."):
            continue
        if key.startswith("joint_head."):
            key = "classifier." + key[len("joint_head."):]
        if old_names and "LayerNorm" in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        state[key] = value.clone()
    return state


def published_folder(tmp_path: Path, old_names: bool = True, widths: list[int] | None = None,
                     hidden: int = 768, vocab: int = 100, name: str = "published",
                     with_vocab: bool = True):
    """(source model, folder, published state). ``hidden`` must equal the image embedding
    width (the release has no projection); ``with_vocab`` writes a matching vocab.txt."""
    bert = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=64, num_labels=4)
    torch.manual_seed(1)
    config = ModelConfig(text_encoder="tiny", **({"image_widths": widths} if widths else {}))
    source = JointModel(config, pretrained_text=False, bert_config=bert).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for module in source.img_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    state = published_state(source, old_names)
    folder = tmp_path / name
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(bert.to_dict()))
    if with_vocab and vocab != MINILM_VOCAB:
        tokenizer_folder(folder, vocab)
    return source, folder, state
