"""The four Forget-MI losses (SPEC §4) over embeddings of the unlearning model (UL) and the
frozen original model (OG).

UU  d([UL img(I_f); UL txt(T_f)], [OG img(Ĩ_f); OG txt(T̃_f)])   forget vs noisy forget
MU  d(UL joint(I_f, T_f), OG joint(Ĩ_f, T̃_f))                    forget vs noisy forget
UR  d([UL img(I_r); UL txt(T_r)], [OG img(I_r); OG txt(T_r)])      retain
MR  d(UL joint(I_r, T_r), OG joint(I_r, T_r))                      retain

d = per-sample Euclidean distance, averaged over the batch. The paper minimises all four
("pull": the forget embeddings move to what the original model makes of noise-destroyed
inputs). The public release instead maximises UU and MU ("push", unbounded): offered only as
that named variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OBJECTIVES = ("pull", "push")


@dataclass(frozen=True)
class LossWeights:
    uu: float = 0.25
    ur: float = 0.25
    mu: float = 0.25
    mr: float = 0.25

    def normalised(self) -> "LossWeights":
        values = (self.uu, self.ur, self.mu, self.mr)
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise ValueError(f"loss weights must be >= 0 with a positive sum, got {values}")
        total = sum(values)
        return LossWeights(*(v / total for v in values))


# The paper's ablation (w_UU, w_UR, w_MU, w_MR). "no-noise" also turns the perturbation off and
# pushes (UU and MU maximised, as the release does without noise): pulling toward the original's
# embeddings of the same clean rows would retain the forget set, not forget it.
PRESETS = {
    "equal": LossWeights(0.25, 0.25, 0.25, 0.25),
    "unimodal": LossWeights(0.4, 0.4, 0.1, 0.1),
    "multimodal": LossWeights(0.1, 0.1, 0.4, 0.4),
    "retention": LossWeights(0.1, 0.4, 0.1, 0.4),
    "no-noise": LossWeights(0.25, 0.25, 0.25, 0.25),
}


def mean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample Euclidean distance."""
    return torch.linalg.vector_norm((a - b).float(), dim=-1).mean()


def unimodal_distance(ul, og) -> torch.Tensor:
    """d([img; txt] of one output, [img; txt] of the other)."""
    return mean_distance(torch.cat([ul.image_embedding, ul.text_embedding], dim=-1),
                         torch.cat([og.image_embedding, og.text_embedding], dim=-1))


def multimodal_distance(ul, og) -> torch.Tensor:
    return mean_distance(ul.joint_embedding, og.joint_embedding)


def forgetmi_loss(ul_forget, og_noisy_forget, ul_retain, og_retain, weights: LossWeights,
                  objective: str = "pull", retention_caps: dict | None = None):
    """Total Forget-MI loss and its detached terms.

    ``retention_caps`` ({"ur": c, "mr": c}) reproduces the release's cap on each retention loss
    after the first epoch (clamped, so no gradient above the cap); None leaves them uncapped.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    w = weights.normalised()
    terms = {"uu": unimodal_distance(ul_forget, og_noisy_forget),
             "mu": multimodal_distance(ul_forget, og_noisy_forget),
             "ur": unimodal_distance(ul_retain, og_retain),
             "mr": multimodal_distance(ul_retain, og_retain)}
    retention = {k: terms[k] for k in ("ur", "mr")}
    if retention_caps:
        retention = {k: v.clamp(max=retention_caps[k]) if k in retention_caps else v
                     for k, v in retention.items()}
    sign = 1.0 if objective == "pull" else -1.0
    total = (sign * (w.uu * terms["uu"] + w.mu * terms["mu"])
             + w.ur * retention["ur"] + w.mr * retention["mr"])
    return total, {k: float(v.detach()) for k, v in terms.items()}
