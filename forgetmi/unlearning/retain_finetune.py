"""Baselines that only train on the retain set (SPEC §5).

- ``finetune``: fine-tune the whole model on the retain set (forgetting by interference).
- ``cf-k``: catastrophic forgetting of the last k layer groups — only they train, on retain.
- ``eu-k``: exact unlearning of the last k layer groups — they are re-initialised, then
  trained on retain, so nothing of the forget set survives in them (Goel et al. 2022).

The retain set is the primary stream: one epoch is one pass over it.
"""

from __future__ import annotations

import logging

import torch

from forgetmi.engine.objective import Stream
from forgetmi.errors import ForgetMIError
from forgetmi.models.layers import last_layers, reinitialise, train_only_last
from forgetmi.unlearning.base import Unlearner, forward, register

logger = logging.getLogger("forgetmi.unlearning")


@register("finetune")
class FineTune(Unlearner):
    def streams(self) -> list[Stream]:
        return [self.retain_stream(primary=True)]

    def compute_loss(self, model, batch):
        retain = batch["retain"]
        return self.supervised(forward(model, retain), retain, "retain")


@register("cf-k")
class CatastrophicForgetting(FineTune):
    settings = ("last_layers",)

    def __init__(self, cfg, datasets, original=None, noisy_forget=None):
        super().__init__(cfg, datasets, original, noisy_forget)
        self.k = cfg.unlearn.last_layers.k

    def prepare_model(self, model) -> None:
        try:
            trainable = train_only_last(model, self.k)
        except ValueError as err:
            raise ForgetMIError(f"unlearn.last_layers.k: {err}") from None
        total = sum(p.numel() for p in model.parameters())
        logger.info("%s: training the last %d layer group(s), %d of %d parameters",
                    self.name, self.k, trainable, total)


@register("eu-k")
class ExactUnlearningLastLayers(CatastrophicForgetting):
    def prepare_model(self, model) -> None:
        super().prepare_model(model)
        self.reset = last_layers(model, self.k)
        count = reinitialise(model, self.reset, self.cfg.seed)
        logger.info("%s: re-initialised %d modules", self.name, count)

    def train_mode(self, model) -> None:
        # Re-initialised BatchNorm layers have no statistics worth keeping: they learn them.
        super().train_mode(model)
        for module in self.reset:
            for sub in module.modules():
                if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                    sub.train()
