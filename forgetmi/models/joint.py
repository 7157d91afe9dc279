"""The joint model: image encoder + text encoder + owned fusion + heads, with named outputs."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig
from transformers.utils import ModelOutput as _HFOutput

from forgetmi.errors import ForgetMIError
from forgetmi.config import ModelConfig
from forgetmi.models.fusion import GatedFusion
from forgetmi.models.image import ImageEncoder
from forgetmi.models.text import TextEncoder
from forgetmi.utils.atomic import atomic_path, file_mode
from forgetmi.utils.run_folder import MODEL_CONFIG as CONFIG_NAME
from forgetmi.utils.run_folder import MODEL_WEIGHTS as WEIGHTS_NAME
from forgetmi.utils.run_folder import check_model_target

RELEASE_IMAGE_SIZE = 2048  # the release trained on 2048² crops only


@dataclass
class ModelOutput(_HFOutput):
    """Named outputs (a dict underneath, so DDP and DeepSpeed traverse it)."""

    image_embedding: torch.Tensor | None = None
    text_embedding: torch.Tensor | None = None
    joint_embedding: torch.Tensor | None = None
    image_logits: torch.Tensor | None = None
    text_logits: torch.Tensor | None = None
    joint_logits: torch.Tensor | None = None


# What each output is computed from, by parameter-name prefix. An encoder's head is not part
# of its embedding, and the joint embedding uses both embeddings but neither encoder's head.
_TRUNKS = {"image": ("img_model.",), "text": ("text_model.",),
           "joint": ("img_model.", "text_model.", "fusion.")}
_HEADS = {"image": "img_model.fc1.", "text": "text_model.classifier.", "joint": "joint_head."}
OUTPUTS = tuple(f.name for f in dataclasses.fields(ModelOutput))


def reaches(name: str, output: str) -> bool:
    """Whether the parameter ``name`` of a JointModel takes part in computing ``output``."""
    kind, what = output.split("_", 1)
    if what == "logits" and name.startswith(_HEADS[kind]):
        return True
    return name.startswith(_TRUNKS[kind]) and not name.startswith(tuple(_HEADS.values()))


class JointModel(nn.Module):
    def __init__(self, config: ModelConfig, pretrained_text: bool = True,
                 bert_config: BertConfig | None = None):
        super().__init__()
        self.config = config
        self.img_model = ImageEncoder(config.image_widths, config.image_pool, config.num_labels)
        dim = self.img_model.embed_dim
        self.text_model = TextEncoder.build(config.text_encoder, dim, config.num_labels,
                                            config.text_dropout, pretrained=pretrained_text,
                                            bert_config=bert_config,
                                            tiny_hidden=config.tiny_text_hidden,
                                            tiny_layers=config.tiny_text_layers)
        self.fusion = GatedFusion(dim, dim, config.fusion_scale_init, config.fusion_scale_max)
        self.joint_head = nn.Linear(dim, config.num_labels)
        # Release-origin weights at other sizes than 2048²: allowed by the record, or by the run
        # (model.allow_other_image_size, passed to from_pretrained); never saved with the model.
        self.allow_other_image_size = config.allow_other_image_size

    def parameters_reaching(self, outputs) -> set[str]:
        """Names of the parameters on which any of ``outputs`` (ModelOutput fields) depends:
        those a loss reading only these outputs can train."""
        unknown = sorted(set(outputs) - set(OUTPUTS))
        if unknown:
            raise ValueError(f"unknown model outputs {unknown}; the model has {', '.join(OUTPUTS)}")
        return {name for name, _ in self.named_parameters()
                if any(reaches(name, output) for output in outputs)}

    @property
    def bert_config(self) -> BertConfig:
        return self.text_model.bert.config

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> ModelOutput:
        # Half-precision weights (DeepSpeed's fp16 mode) get images of their own dtype; under
        # autocast the weights stay fp32 and nothing changes.
        image = image.to(self.img_model.conv1.weight.dtype)
        if self.config.origin == "release" and not self.allow_other_image_size:
            self._check_release_size(image)
        image_embedding, image_logits = self.img_model(image)
        text_embedding, text_logits = self.text_model(input_ids, attention_mask)
        joint = self.fusion(image_embedding, text_embedding)
        return ModelOutput(image_embedding=image_embedding, text_embedding=text_embedding,
                           joint_embedding=joint, image_logits=image_logits,
                           text_logits=text_logits, joint_logits=self.joint_head(joint))

    @staticmethod
    def _check_release_size(image: torch.Tensor) -> None:
        """Release-origin weights compute what the release did only at 2048²: their fixed 2×2
        average pool read the 4×4 map of such an image, the adaptive pool here reads any."""
        side = tuple(image.shape[-2:])
        if side != (RELEASE_IMAGE_SIZE, RELEASE_IMAGE_SIZE):
            raise ForgetMIError(
                f"JointModel: release-origin weights were given a {side[0]}×{side[1]} image; "
                f"they compute the release's embedding only at {RELEASE_IMAGE_SIZE}²: feed "
                "2048² crops, or load with from_pretrained(DIR, allow_other_image_size=True) "
                "(tests on small images)")

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, state_dict: dict | None = None,
                        replace: bool = False) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` atomically.

        ``state_dict`` overrides the module's own (e.g. the gathered weights of a ZeRO-3 run);
        ``replace`` lets it replace a forgetmi model folder already there, and nothing else.
        """
        return save_weights(self.config, self.bert_config,
                            self.state_dict() if state_dict is None else state_dict, directory,
                            replace)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike,
                        allow_other_image_size: bool = False) -> "JointModel":
        """A saved model folder. ``allow_other_image_size``: a release-origin model may run at
        sizes other than 2048² (the run's ``model.allow_other_image_size``)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        published = release_folder_advice(directory)
        if published:
            raise ForgetMIError(published)
        if not config_path.is_file() or not weights_path.is_file():
            raise ForgetMIError(f"{directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                                "(a folder written by save_pretrained)")
        try:
            meta = json.loads(config_path.read_text())
            config = ModelConfig(**meta["forgetmi_model"])
            bert_config = BertConfig(**meta["bert"])
        except (ValueError, KeyError, TypeError) as err:
            raise ForgetMIError(f"{config_path}: not a forgetmi model config ({err})") from None
        except ForgetMIError as err:  # a value no model of this package can have
            raise ForgetMIError(f"{config_path}: {err}") from None
        model = cls(config, pretrained_text=False, bert_config=bert_config)
        model.allow_other_image_size = config.allow_other_image_size or allow_other_image_size
        try:
            state = load_file(str(weights_path))
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise ForgetMIError(f"{weights_path}: unreadable or truncated weights ({err})") from None
        load_state_strict(model, state, weights_path)
        return model


def save_weights(config: ModelConfig, bert_config: BertConfig, state_dict: dict,
                 directory: str | os.PathLike, replace: bool = False) -> Path:
    """Write a model folder. ``replace``: an existing forgetmi model folder there may be
    replaced (the engine saving its model again); anything else there is refused."""
    check_model_target(directory, replace)
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = {"forgetmi_model": dataclasses.asdict(config), "bert": bert_config.to_dict(),
            "format_version": 1}
    with atomic_path(directory, folder=True, replace=replace) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        # safetensors writes its file owner-only (0600): a model on a shared cluster is read by
        # the group's jobs, so it gets the mode any new file gets (0666 less the umask).
        os.chmod(tmp / WEIGHTS_NAME, file_mode())
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str))
    return Path(directory)


def release_folder_advice(directory: str | os.PathLike) -> str | None:
    """One line for a folder in the release's layout (a BERT config.json beside
    pytorch_model.bin, or a bare model_state_dict.pth) given where a forgetmi model is read:
    how to import it. None for anything else."""
    directory = Path(directory)
    weights = next((directory / n for n in ("pytorch_model.bin", "model_state_dict.pth")
                    if (directory / n).is_file()), None)
    if weights is None or (directory / WEIGHTS_NAME).is_file():
        return None
    config = "" if (directory / CONFIG_NAME).is_file() else " --config ORIGINAL/config.json"
    return (f"{directory}: a Forget-MI release model ({weights.name}), not a forgetmi one; "
            f"import it once (`forgetmi import-checkpoint THIS_FOLDER DST{config}`) and give DST "
            "as unlearn.original (base_model_path)")


def load_state_strict(model: nn.Module, state: dict, source, allow_missing: tuple[str, ...] = (),
                      fix: str = "give the config.json saved with these weights"):
    """Load ``state``, or fail in one line: how many keys are missing, unexpected or of another
    shape, the first of each, and ``fix``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    # In the model's order: the first names the earliest layer that differs.
    wrong_shape = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                   for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        # The first of each kind and how many: the whole lists would fill the terminal, and
        # the first already says which part (a stage, a head) differs.
        parts = [f"{len(keys)} {label} key(s), first {keys[0]}" for label, keys in
                 (("wrong shape", wrong_shape), ("missing", missing),
                  ("unexpected", unexpected)) if keys]
        raise ForgetMIError(f"{source}: weights do not match the model config "
                            f"({'; '.join(parts)}); {fix}")
    model.load_state_dict(state, strict=False)
