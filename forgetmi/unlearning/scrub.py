"""SCRUB (Kurmanji et al., NeurIPS 2023): a student distilled from the original (teacher),
pushed away from it on the forget set and kept close to it on the retain set.

Each epoch is one pass over the retain set (the min-steps: γ·supervised loss + α·KL to the
teacher). During the first ``max_epochs`` epochs it starts with one pass over the forget set of
max-steps (maximise the KL to the teacher), as the reference implementation alternates.
The teacher is frozen in eval mode; the KL is averaged over the three heads.
"""

from __future__ import annotations

from forgetmi.engine.objective import Stream
from forgetmi.losses.distillation import heads_kl
from forgetmi.unlearning.base import Unlearner, forward, register


@register("scrub")
class Scrub(Unlearner):
    settings = ("scrub",)
    uses_original = True

    def __init__(self, cfg, datasets, original=None, noisy_forget=None):
        super().__init__(cfg, datasets, original, noisy_forget)
        self.hp = cfg.unlearn.scrub
        self.phase = "min"

    def streams(self) -> list[Stream]:
        streams = [self.retain_stream(primary=True)]
        if self.hp.max_epochs > 0:
            # A lead stream: the max-pass sees each forget row once, and no retain batch waits
            # idle beside it (the retain pass follows whole).
            forget = self.forget_stream(primary=False)
            forget.lead_epochs = self.hp.max_epochs
            streams.append(forget)
        return streams

    def at_step(self, epoch: int, micro: int) -> None:
        max_steps = self.steps_per_pass["forget"] if epoch < self.hp.max_epochs else 0
        self.phase = "max" if micro < max_steps else "min"

    def compute_loss(self, model, batch):
        t = self.hp.temperature
        if self.phase == "max":
            forget = batch["forget"]
            kl = heads_kl(forward(model, forget), self.teacher(forget), t)
            return -self.hp.forget_kl_weight * kl, {"forget_kl": float(kl.detach())}
        retain = batch["retain"]
        output = forward(model, retain)
        ce, terms = self.supervised(output, retain, "retain")
        kl = heads_kl(output, self.teacher(retain), t)
        loss = self.hp.retain_ce_weight * ce + self.hp.retain_kl_weight * kl
        return loss, {**terms, "retain_kl": float(kl.detach())}
