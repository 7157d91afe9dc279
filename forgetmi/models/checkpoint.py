"""Import of the published Forget-MI / Chauhan et al. checkpoint format.

A published model is a folder with a BERT ``config.json`` (``num_labels: 4``) and a
``pytorch_model.bin`` state dict: ``text_model.bert.*``, ``text_model.classifier.*``,
``img_model.*`` and an unused 768→4 ``classifier.*``. Old files name LayerNorm parameters
``gamma``/``beta``. The file is loaded weights-only: pickled objects other than tensors are refused.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import torch
from transformers import BertConfig

from forgetmi.errors import ForgetMIError
from forgetmi.models.config import ModelConfig
from forgetmi.models.joint import JointModel, load_state_strict

logger = logging.getLogger("forgetmi.models")

# Buffers that some transformers versions save and others do not.
_IGNORABLE = ("text_model.bert.embeddings.position_ids",)


def _rename(key: str) -> str:
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    if key.startswith("classifier."):
        key = "joint_head." + key[len("classifier."):]  # the unused joint head of the release
    return key


def load_published_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ForgetMIError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ForgetMIError(f"{path}: refused to load: the file holds objects other than tensors "
                            f"(weights-only loading; {str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ForgetMIError(f"{path}: unreadable or truncated checkpoint "
                            f"({str(err).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ForgetMIError(f"{path}: expected a state dict of tensors")
    return {_rename(k): v for k, v in state.items() if k not in _IGNORABLE}


def import_published_checkpoint(src: str | os.PathLike, text_encoder: str | None = None,
                                image_widths: list[int] | None = None) -> JointModel:
    """Build a :class:`JointModel` from a published folder.

    The fusion module is not part of the published format; it starts freshly initialised and
    must be fitted (with the encoders frozen) before joint embeddings mean anything.
    ``text_encoder`` names the tokenizer folder to record (SciBERT for the paper's weights);
    by default ``src`` itself when it holds a vocabulary.
    """
    src = Path(src)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ForgetMIError(f"{src}: expected config.json (a BERT config) and pytorch_model.bin")
    try:
        bert_config = BertConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as err:
        raise ForgetMIError(f"{config_path}: not a BERT config ({err})") from None
    state = load_published_state(src / "pytorch_model.bin")
    if text_encoder is None and (src / "vocab.txt").is_file():
        text_encoder = str(src)
    config = ModelConfig(num_labels=getattr(bert_config, "num_labels", 4) or 4,
                         text_encoder=text_encoder,
                         **({"image_widths": image_widths} if image_widths else {}))
    model = JointModel(config, pretrained_text=False, bert_config=bert_config)
    allow = ("fusion.",) if "joint_head.weight" in state else ("fusion.", "joint_head.")
    missing_bn_counters = [k for k in model.state_dict()
                           if k.endswith("num_batches_tracked") and k not in state]
    for key in missing_bn_counters:  # absent from files written by old PyTorch versions
        state[key] = torch.zeros((), dtype=torch.long)
    load_state_strict(model, state, src / "pytorch_model.bin", allow_missing=allow)
    logger.info("imported %d tensors from %s; fusion initialised fresh", len(state), src)
    return model
