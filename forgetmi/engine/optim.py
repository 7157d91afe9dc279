"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    cpu_offload: bool = False, text_lr: float | None = None,
                    fused: bool = False) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights.

    ``text_lr`` gives the pretrained BERT body its own rate (fine-tuning wants a far smaller one
    than the image encoder trained from scratch); None uses ``lr`` throughout. With DeepSpeed
    optimizer offload the CPU-side DeepSpeedCPUAdam does the same update (DeepSpeed refuses a
    plain torch optimizer there). ``fused``: torch's fused kernel, the same update in one pass
    (rounding aside).
    """
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(".bias")
        is_text = text_lr is not None and ".bert." in f".{name}"
        groups.setdefault((is_text, no_decay), []).append(param)
    param_groups = [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
                     "lr": text_lr if is_text else lr}
                    for (is_text, no_decay), params in sorted(groups.items())]
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        return DeepSpeedCPUAdam(param_groups, lr=lr, adamw_mode=True)
    # None, not False, when unfused: torch then keeps its own choice (the foreach kernels on
    # CUDA), which an explicit fused=False would turn off as well.
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused or None)


SCHEDULERS = ("cosine", "linear", "constant")


def build_scheduler(optimizer, kind: str, total_steps: int, warmup_ratio: float) -> LambdaLR:
    """Linear warmup, then cosine / linear decay to zero; or ``constant``: the base rate on
    every step, with no warmup (the paper's effective schedule: its scheduler never stepped)."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be cosine, linear or constant, got {kind!r}")
    warmup = 0 if kind == "constant" else int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress

    return LambdaLR(optimizer, factor)
