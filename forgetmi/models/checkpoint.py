"""Import of the published Forget-MI / Chauhan et al. checkpoint format.

A published model is a folder with a BERT ``config.json`` (``num_labels: 4``) and a
``pytorch_model.bin`` state dict: ``text_model.bert.*``, ``text_model.classifier.*``,
``img_model.*`` and an unused 768→4 ``classifier.*``. Old files name LayerNorm parameters
``gamma``/``beta``. The release's unlearned models are bare ``epoch_N/model_state_dict.pth``
files of the same keys; they import with the ``config.json`` of the model they came from. Files
are loaded weights-only: pickled objects other than tensors are refused.

The imported model records what it needs to be fed (origin ``release``, ``release`` image
preprocessing, and its tokenizer, whose vocabulary must match the word embeddings); see
:mod:`forgetmi.models.provenance`. The fusion is not part of the format: it is created here,
from a fixed seed so that importing a file twice gives the same model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from pathlib import Path

import torch
from transformers import BertConfig

from forgetmi.errors import ForgetMIError
from forgetmi.config import ModelConfig
from forgetmi.models.joint import JointModel, load_state_strict
from forgetmi.models.provenance import check_tokenizer_vocab

logger = logging.getLogger("forgetmi.models")

# Buffers that some transformers versions save and others do not.
_IGNORABLE = ("text_model.bert.embeddings.position_ids",)
WEIGHT_FILES = ("pytorch_model.bin", "model_state_dict.pth")
FUSION_SEED = 0  # the new fusion (and a missing joint head) start from this seed, every import
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# torch's refusals name the global: "GLOBAL print was not an allowed global" (not allowlisted),
# "GLOBAL posix.system whose module posix is blocked" (a module torch blocks outright).
_GLOBAL = re.compile(r"GLOBAL \S+ (?:was not an allowed global|whose module \S+ is blocked)")
# torch's advice to load the file unsafely: never repeated to the user.
_UNSAFE_ADVICE = re.compile(r"weights_only|re-run|trust", re.IGNORECASE)


class CheckpointImportError(ForgetMIError):
    """A published checkpoint cannot be imported as it is (no BERT config, unknown layout)."""


def _rename(key: str) -> str:
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    if key.startswith("classifier."):
        key = "joint_head." + key[len("classifier."):]  # the unused joint head of the release
    return key


def _refusal_reason(err: BaseException) -> str:
    """torch's refusal without its terminal colours: the phrase that names the global, else its
    first line that does not advise loading unsafely (which this package never does)."""
    text = _ANSI.sub("", str(err))
    named = _GLOBAL.search(text)
    if named:
        return named.group(0)
    lines = [line.strip() for line in re.split(r"[\n.]\s", text) if line.strip()]
    safe = [line for line in lines if not _UNSAFE_ADVICE.search(line)]
    return safe[0] if safe else type(err).__name__


def load_published_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ForgetMIError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ForgetMIError(f"{path}: refused to load: the file holds objects other than tensors "
                            f"(weights-only loading; {_refusal_reason(err)})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ForgetMIError(f"{path}: unreadable or truncated checkpoint "
                            f"({_refusal_reason(err)})") from None
    for wrapper in ("state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ForgetMIError(f"{path}: expected a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return {_rename(k): v for k, v in state.items() if k not in _IGNORABLE}


def _locate(src: Path, config: str | os.PathLike | None) -> tuple[Path, Path]:
    """(weights file, BERT config.json) of a published folder or weights file."""
    if src.is_dir():
        weights = next((src / n for n in WEIGHT_FILES if (src / n).is_file()), None)
        if weights is None:
            raise CheckpointImportError(f"{src}: expected config.json (a BERT config) and "
                                        f"{' or '.join(WEIGHT_FILES)}")
    elif src.is_file():
        weights = src
    else:
        raise CheckpointImportError(f"{src}: no such checkpoint folder or file")
    if config is not None:
        config_path = Path(config)
        config_path = config_path / "config.json" if config_path.is_dir() else config_path
    else:
        config_path = weights.parent / "config.json"
        if not config_path.is_file():
            raise CheckpointImportError(
                f"{src}: no config.json beside the weights (the release's unlearned "
                "epoch_N/model_state_dict.pth files have none); give the original model's: "
                "--config ORIGINAL/config.json")
    if not config_path.is_file():
        raise CheckpointImportError(f"{config_path}: BERT config.json not found")
    return weights, config_path


def _image_layout(state: dict[str, torch.Tensor], source) -> tuple[list[int], int]:
    """Stage widths and pool side of the image encoder, read off the weights (the defaults
    where they are absent: the key check then names what is missing)."""
    widths = []
    while (conv := state.get(f"img_model.layer{len(widths) + 1}.0.conv1.weight")) is not None \
            and conv.ndim == 4:
        widths.append(int(conv.shape[0]))
    defaults = ModelConfig()
    widths = widths or list(defaults.image_widths)
    head = state.get("img_model.fc1.weight")
    if head is None:
        return widths, defaults.image_pool
    pool = math.isqrt(int(head.shape[1]) // widths[-1])
    if widths[-1] * pool * pool != head.shape[1]:
        raise CheckpointImportError(f"{source}: img_model.fc1 takes {head.shape[1]} inputs, not "
                                    f"{widths[-1]} channels × a square pool")
    return widths, pool


def _tokenizer(text_encoder: str | None, config_path: Path) -> str | None:
    """The tokenizer to record: the given folder, else the one beside the config, else the
    packaged MiniLM (None). Recorded as an absolute path so the model works from anywhere."""
    if text_encoder in (None, "") and (config_path.parent / "vocab.txt").is_file():
        text_encoder = str(config_path.parent)
    if text_encoder in (None, "", "tiny"):
        return None
    return str(Path(os.path.expanduser(text_encoder)).resolve())


def import_published_checkpoint(src: str | os.PathLike, text_encoder: str | None = None,
                                config: str | os.PathLike | None = None) -> JointModel:
    """Build a :class:`JointModel` from a published folder (or a bare weights file + ``config``).

    ``text_encoder`` names the tokenizer folder (SciBERT for the paper's weights); by default
    the folder of the config when it holds a vocabulary, else the packaged MiniLM. Its size
    must equal the word embeddings' rows. The fusion is new: seeded, untrained.
    """
    src = Path(src)
    weights, config_path = _locate(src, config)
    try:
        bert_config = BertConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as err:
        raise CheckpointImportError(f"{config_path}: not a BERT config ({err})") from None
    state = load_published_state(weights)
    widths, pool = _image_layout(state, weights)
    tokenizer = _tokenizer(text_encoder, config_path)
    embeddings = state.get("text_model.bert.embeddings.word_embeddings.weight")
    rows = int(embeddings.shape[0]) if embeddings is not None else bert_config.vocab_size
    vocab = check_tokenizer_vocab(tokenizer, rows, weights)
    try:
        model_config = ModelConfig(num_labels=getattr(bert_config, "num_labels", 4) or 4,
                                   image_widths=widths, image_pool=pool, text_encoder=tokenizer,
                                   origin="release", image_preprocessing="release")
    except ForgetMIError as err:  # e.g. a classifier of fewer labels than the edema grades
        raise CheckpointImportError(f"{config_path}: {err}") from None
    # Everything not in the file (the fusion, maybe the joint head) comes from a fixed seed,
    # without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FUSION_SEED)
        model = JointModel(model_config, pretrained_text=False, bert_config=bert_config)
    has_head = "joint_head.weight" in state
    allow = ("fusion.",) if has_head else ("fusion.", "joint_head.")
    missing_bn_counters = [k for k in model.state_dict()
                           if k.endswith("num_batches_tracked") and k not in state]
    for key in missing_bn_counters:  # absent from files written by old PyTorch versions
        state[key] = torch.zeros((), dtype=torch.long)
    load_state_strict(model, state, weights, allow_missing=allow,
                      fix="expected a Forget-MI release checkpoint's tensors")
    logger.info("imported %d tensors from %s (release preprocessing, tokenizer %s with %d "
                "tokens)", len(state), weights, tokenizer or "packaged MiniLM", vocab)
    logger.warning("the joint fusion%s is new (seed %d) and untrained: the release computed its "
                   "joint embedding with a gate re-drawn at random every step%s; fit the fusion "
                   "(encoders frozen) before reading joint embeddings or joint logits",
                   "" if has_head else " and joint head", FUSION_SEED,
                   ", and its joint head (classifier.*) was never trained" if has_head else "")
    return model
