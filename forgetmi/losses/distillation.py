"""Distillation losses between a student and a frozen teacher, over the three heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS = ("image", "text", "joint")


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
          temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher ‖ student) of temperature-softened distributions, times T² (Hinton et al.),
    averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def heads_kl(student, teacher, temperature: float = 1.0) -> torch.Tensor:
    """:func:`kd_kl` averaged over the image, text and joint heads of two model outputs."""
    return sum(kd_kl(student[f"{h}_logits"], teacher[f"{h}_logits"], temperature)
               for h in HEADS) / len(HEADS)


def heads_cross_entropy(output, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the three heads (no ranking term)."""
    return sum(F.cross_entropy(output[f"{h}_logits"].float(), labels) for h in HEADS) / len(HEADS)
