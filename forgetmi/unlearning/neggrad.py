"""Baselines that train against the forget set's labels (SPEC §5).

- ``neggrad+`` (Kurmanji et al. 2023): β·L(retain) − (1 − β)·L(forget), gradient ascent on the
  forget rows held in check by descent on retain rows.
- ``random-label`` (Graves et al. 2021; "RL" in SalUn): the forget rows are fine-tuned towards
  a wrong label, fixed per row, alongside the retain rows with their true labels.

The forget set is the primary stream (one epoch = one pass over it, as Forget-MI); retain
batches cycle over the whole retain set.
"""

from __future__ import annotations

import torch

from forgetmi.engine.objective import Stream
from forgetmi.errors import ForgetMIError
from forgetmi.losses.distillation import heads_cross_entropy
from forgetmi.unlearning.base import Unlearner, forward, register


@register("neggrad+")
class NegGradPlus(Unlearner):
    settings = ("neggrad",)

    def __init__(self, cfg, datasets, original=None, noisy_forget=None):
        super().__init__(cfg, datasets, original, noisy_forget)
        self.beta = cfg.unlearn.neggrad.retain_weight
        if not 0.0 <= self.beta <= 1.0:
            raise ForgetMIError(f"unlearn.neggrad.retain_weight: expected a number in [0, 1], "
                                f"got {self.beta}")

    def streams(self) -> list[Stream]:
        return [self.forget_stream(), self.retain_stream()]

    def compute_loss(self, model, batch):
        forget, retain = batch["forget"], batch["retain"]
        retain_loss, terms = self.supervised(forward(model, retain), retain, "retain")
        # Ascent on cross-entropy only: the ranking hinge has no meaningful maximum.
        forget_ce = heads_cross_entropy(forward(model, forget), forget["label"])
        loss = self.beta * retain_loss - (1.0 - self.beta) * forget_ce
        return loss, {**terms, "forget_ce": float(forget_ce.detach())}


def wrong_labels(labels: torch.Tensor, index: torch.Tensor, seed: int,
                 num_classes: int = 4) -> torch.Tensor:
    """A label different from the true one, fixed per (row, seed): a shift of 1..C−1."""
    mixed = (index.long() * 2654435761 + seed * 40503) % 2147483647
    shift = 1 + mixed % (num_classes - 1)
    return (labels + shift) % num_classes


@register("random-label")
class RandomLabel(Unlearner):
    def streams(self) -> list[Stream]:
        return [self.forget_stream(), self.retain_stream()]

    def compute_loss(self, model, batch):
        forget, retain = batch["forget"], batch["retain"]
        retain_loss, terms = self.supervised(forward(model, retain), retain, "retain")
        output = forward(model, forget)
        wrong = wrong_labels(forget["label"], forget["index"].to(forget["label"].device),
                             self.cfg.seed, output.joint_logits.shape[-1])
        forget_ce = heads_cross_entropy(output, wrong)
        return retain_loss + forget_ce, {**terms, "forget_random_ce": float(forget_ce.detach())}
