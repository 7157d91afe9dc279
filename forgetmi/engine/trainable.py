"""Which parameters a run trains: those its loss can reach, less those the method froze.

An objective declares the model outputs its loss reads (``Objective.reads``); parameters that
cannot reach them are frozen for the run, before the optimizer and the distributed wrapper are
built. Otherwise DDP (``find_unused_parameters=False``) waits for their gradients and fails at
the second step; ``find_unused_parameters=True`` would walk the graph every step to find them;
and the frozen set says plainly what a method changes. The first update checks the declaration:
a trainable parameter that got no gradient is an error naming it.
"""

from __future__ import annotations

import logging

import torch

from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi.engine")


def freeze_unreached(model: torch.nn.Module, reads) -> None:
    """Freeze every parameter that none of the outputs ``reads`` depends on (None: keep all)."""
    if reads is None:
        return
    if not hasattr(model, "parameters_reaching"):
        raise ForgetMIError(f"the objective reads only {sorted(reads)}, but {type(model).__name__} "
                            "cannot tell which parameters reach them (parameters_reaching)")
    reached = model.parameters_reaching(reads)
    for name, param in model.named_parameters():
        if name not in reached:
            param.requires_grad_(False)


def modules_of(names: list[str], every: list[str]) -> list[str]:
    """The fewest module prefixes that cover exactly ``names`` among ``every`` parameter name:
    ``img_model.layer1`` rather than its twelve tensors."""
    chosen = set(names)
    out: list[str] = []
    for name in names:
        parts = name.split(".")
        best = name
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth]) + "."
            if all(n in chosen for n in every if n.startswith(prefix)):
                best = prefix[:-1]
                break
        if best not in out:
            out.append(best)
    return out


def trainable_record(model: torch.nn.Module, objective_name: str) -> dict:
    """What this run trains and what it keeps fixed, by tensor and by module."""
    named = list(model.named_parameters())
    every = [n for n, _ in named]
    trainable = [n for n, p in named if p.requires_grad]
    frozen = [n for n, p in named if not p.requires_grad]
    if not trainable:
        raise ForgetMIError(f"{objective_name}: no parameter is left to train")
    return {"objective": objective_name,
            "trainable_parameters": sum(p.numel() for _, p in named if p.requires_grad),
            "total_parameters": sum(p.numel() for _, p in named),
            "frozen_modules": modules_of(frozen, every),
            "trainable": trainable, "frozen": frozen}


def log_trainable(record: dict) -> None:
    frozen = record["frozen_modules"]
    shown = ", ".join(frozen[:6]) + (f", … ({len(frozen)} in all)" if len(frozen) > 6 else "")
    logger.info("%s trains %s of %s parameters (%d tensors); frozen: %s",
                record["objective"], f"{record['trainable_parameters']:,}",
                f"{record['total_parameters']:,}", len(record["trainable"]), shown or "none")


def check_gradients(model: torch.nn.Module, objective_name: str) -> None:
    """After a backward pass: every trainable parameter must have received a gradient."""
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        every = [n for n, _ in model.named_parameters()]
        raise ForgetMIError(
            f"{objective_name}: its loss reaches no trainable parameter in "
            f"{', '.join(modules_of(missing, every)[:6])} ({len(missing)} tensors); declare the "
            "model outputs the loss reads (Objective.reads) so those are frozen")
