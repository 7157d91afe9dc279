"""Forget-MI (SPEC §4) as an engine objective.

Streams: the forget set (primary: one epoch = one pass over it), its noisy copy drawing the very
same batches, and the retain set cycling over all of its rows across steps. The original model
is frozen in eval mode (no dropout, no BatchNorm drift) and kept out of the engine's prepare(),
so it works beside a DeepSpeed-wrapped student.
"""

from __future__ import annotations

import torch

from forgetmi.engine.loop import Objective, Stream
from forgetmi.errors import ForgetMIError
from forgetmi.losses.forgetmi import PRESETS, LossWeights, forgetmi_loss
from forgetmi.unlearning.base import register


class ForgetMIObjective(Objective):
    def __init__(self, forget, noisy_forget, retain, original, weights: LossWeights,
                 objective: str, batch_size: int, retain_batch_size: int,
                 freeze_batchnorm: bool = True):
        self.freeze_batchnorm = freeze_batchnorm
        self.forget, self.noisy_forget, self.retain = forget, noisy_forget, retain
        self.original = original
        self.weights, self.objective = weights, objective
        self.batch_size, self.retain_batch_size = batch_size, retain_batch_size

    def streams(self) -> list[Stream]:
        return [Stream("forget", self.forget, self.batch_size, primary=True),
                Stream("noisy_forget", self.noisy_forget, self.batch_size, follows="forget"),
                Stream("retain", self.retain, self.retain_batch_size)]

    def setup(self, accelerator) -> None:
        self.original = self.original.to(accelerator.device).eval().requires_grad_(False)

    def train_mode(self, model) -> None:
        """Training mode, with BatchNorm optionally kept on the running statistics.

        The original model embeds in eval mode; a student whose BatchNorm normalised with
        batch statistics would start far from it on the retain set for that reason alone, and
        the retention losses would spend the unlearning budget undoing the mode difference.
        """
        model.train()
        if self.freeze_batchnorm:
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def compute_loss(self, model, batch):
        forget, noisy, retain = batch["forget"], batch["noisy_forget"], batch["retain"]
        with torch.no_grad():
            og_noisy = self.original(noisy["image"], noisy["input_ids"], noisy["attention_mask"])
            og_retain = self.original(retain["image"], retain["input_ids"],
                                      retain["attention_mask"])
        ul_forget = model(forget["image"], forget["input_ids"], forget["attention_mask"])
        ul_retain = model(retain["image"], retain["input_ids"], retain["attention_mask"])
        return forgetmi_loss(ul_forget, og_noisy, ul_retain, og_retain, self.weights,
                             self.objective)


def resolve_weights(preset: str, weights: list[float] | None) -> LossWeights:
    if weights is not None:
        if len(weights) != 4:
            raise ForgetMIError(f"unlearn.weights: expected 4 numbers (UU, UR, MU, MR), got {weights}")
        return LossWeights(*weights)
    if preset not in PRESETS:
        raise ForgetMIError(f"unlearn.preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


@register("forgetmi")
def build(cfg, data, original, noisy_forget, datasets):
    u = cfg.unlearn
    return ForgetMIObjective(datasets["forget"], noisy_forget, datasets["retain"], original,
                             resolve_weights(u.preset, u.weights), u.objective,
                             cfg.train.batch_size, u.retain_batch_size or cfg.train.batch_size,
                             u.freeze_batchnorm)
