"""MultiDelete (Cheng & Amiri, ECCV 2024): multimodal unlearning by modality decoupling.

- L_MD, decoupling: the student's joint embedding of a forget pair (I_f, T_f) is pulled to the
  original model's joint embedding of the same image with an unrelated report (one from the
  retain batch), so the pair looks like two unrelated data points.
- L_MKR, multimodal knowledge retention: joint embeddings of retain pairs stay the original's.
- L_UKR, unimodal knowledge retention: image and text embeddings of retain rows stay too.
Loss = w_MD·L_MD + α·L_MKR + β·L_UKR with the per-sample Euclidean distance of Forget-MI's
losses (the paper's embedding-distance form).
"""

from __future__ import annotations

import torch

from forgetmi.engine.objective import Stream
from forgetmi.losses.forgetmi import mean_distance, multimodal_distance, unimodal_distance
from forgetmi.unlearning.base import EMBEDDINGS, Unlearner, forward, register


def unrelated_text(forget: dict, retain: dict) -> dict:
    """The forget images paired with reports of other patients (the retain batch's, cycled)."""
    n, m = forget["input_ids"].shape[0], retain["input_ids"].shape[0]
    pick = torch.arange(n, device=retain["input_ids"].device) % m
    return {"image": forget["image"], "input_ids": retain["input_ids"][pick],
            "attention_mask": retain["attention_mask"][pick]}


@register("multidelete")
class MultiDelete(Unlearner):
    settings = ("multidelete",)
    uses_original = True
    reads = EMBEDDINGS   # the heads are untouched

    def __init__(self, cfg, datasets, original=None, noisy_forget=None):
        super().__init__(cfg, datasets, original, noisy_forget)
        self.hp = cfg.unlearn.multidelete

    def streams(self) -> list[Stream]:
        return [self.forget_stream(), self.retain_stream()]

    def compute_loss(self, model, batch):
        forget, retain = batch["forget"], batch["retain"]
        og_unpaired = self.teacher(unrelated_text(forget, retain))
        og_retain = self.teacher(retain)
        ul_forget, ul_retain = forward(model, forget), forward(model, retain)
        terms = {"md": mean_distance(ul_forget.joint_embedding, og_unpaired.joint_embedding),
                 "mkr": multimodal_distance(ul_retain, og_retain),
                 "ukr": unimodal_distance(ul_retain, og_retain)}
        loss = (self.hp.decoupling_weight * terms["md"] + self.hp.multimodal_weight * terms["mkr"]
                + self.hp.unimodal_weight * terms["ukr"])
        return loss, {k: float(v.detach()) for k, v in terms.items()}
