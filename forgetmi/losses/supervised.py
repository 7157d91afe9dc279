"""The original model's training loss: per-head cross-entropy plus the image-text ranking loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ranking_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                 study_ids: torch.Tensor | None = None, min_margin: float = 0.5) -> torch.Tensor:
    """Hinge ranking loss of Chauhan et al. between matched and imposter image-text pairs.

    Each sample i takes its batch neighbour j = i+1 (cyclically) as imposter. With dot-product
    similarity s, the loss of i is
        max(0, m - s(I_i, T_i) + s(I_j, T_i)) + max(0, m - s(I_i, T_i) + s(I_i, T_j))
    with margin m = max(min_margin, |y_i - y_j|), 0 when i and j share a report (same study),
    and min_margin when either label is unknown (negative). Averaged over the batch.
    """
    if image.shape[0] < 2:
        return image.sum() * 0.0  # no imposter exists for a single sample
    imposter_image = torch.roll(image, shifts=-1, dims=0)
    imposter_text = torch.roll(text, shifts=-1, dims=0)
    imposter_labels = torch.roll(labels, shifts=-1, dims=0)
    matched = (image * text).sum(-1)
    margin = (labels - imposter_labels).abs().to(matched.dtype).clamp(min=min_margin)
    unlabeled = (labels < 0) | (imposter_labels < 0)
    margin = torch.where(unlabeled, torch.full_like(margin, min_margin), margin)
    if study_ids is not None:
        same_report = study_ids == torch.roll(study_ids, shifts=-1, dims=0)
        margin = torch.where(same_report, torch.zeros_like(margin), margin)
    image_imposter = F.relu(margin - matched + (imposter_image * text).sum(-1))
    text_imposter = F.relu(margin - matched + (image * imposter_text).sum(-1))
    return (image_imposter + text_imposter).mean()


def supervised_loss(output, labels: torch.Tensor, study_ids: torch.Tensor | None = None,
                    ranking_weight: float = 1.0, joint_weight: float = 1.0):
    """CE(image) + CE(text) + joint_weight * CE(joint) + ranking_weight * ranking.

    Returns the total and a dict of the detached terms for logging.
    """
    terms = {
        "ce_image": F.cross_entropy(output.image_logits, labels),
        "ce_text": F.cross_entropy(output.text_logits, labels),
        "ce_joint": F.cross_entropy(output.joint_logits, labels),
        "ranking": ranking_loss(output.image_embedding, output.text_embedding, labels, study_ids),
    }
    total = (terms["ce_image"] + terms["ce_text"] + joint_weight * terms["ce_joint"]
             + ranking_weight * terms["ranking"])
    return total, {k: float(v.detach()) for k, v in terms.items()}
