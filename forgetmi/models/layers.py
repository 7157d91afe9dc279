"""The joint model's layers counted from the output, for methods that touch only the last k.

Group 1 holds everything above the two encoders' bodies: the heads, the fusion module, the
image projection and the text pooler/projection. Group j > 1 pairs the image stage j places
below the top (layer7, layer6, ...) with the BERT layer as far from the top, so "the last k
layers" means the same depth in both branches. The stems (image conv1/bn1, BERT embeddings)
come last.
"""

from __future__ import annotations

import torch
from torch import nn

from forgetmi.models.image import init_image_weights


def layer_groups(model: nn.Module) -> list[list[nn.Module]]:
    """Modules of ``model`` (a JointModel) grouped from the output down."""
    image, text = model.img_model, model.text_model
    top = [model.joint_head, model.fusion, image.fc1, text.classifier]
    if text.proj is not None:
        top.append(text.proj)
    if getattr(text.bert, "pooler", None) is not None:
        top.append(text.bert.pooler)
    stages = [getattr(image, f"layer{i}") for i in range(image.num_stages, 0, -1)]
    bert_layers = list(text.bert.encoder.layer)[::-1]
    groups = [top]
    for depth in range(max(len(stages), len(bert_layers))):
        group = []
        if depth < len(stages):
            group.append(stages[depth])
        if depth < len(bert_layers):
            group.append(bert_layers[depth])
        groups.append(group)
    groups.append([image.conv1, image.bn1, text.bert.embeddings])
    return groups


def last_layers(model: nn.Module, k: int) -> list[nn.Module]:
    groups = layer_groups(model)
    if not 1 <= k <= len(groups):
        raise ValueError(f"k must be between 1 and {len(groups)} (the model's layer groups), got {k}")
    return [module for group in groups[:k] for module in group]


def train_only_last(model: nn.Module, k: int) -> int:
    """Freeze every parameter outside the last ``k`` groups; returns the trainable count."""
    model.requires_grad_(False)
    for module in last_layers(model, k):
        module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def reinitialise(model: nn.Module, modules: list[nn.Module], seed: int) -> int:
    """Redraw every parameterised submodule of ``modules`` as ``model`` (a JointModel) was
    initialised at construction, reproducibly.

    PyTorch's defaults alone would not do: the image encoder draws its convolutions with
    Kaiming (fan-out) and starts each residual branch at zero, BERT draws from
    normal(0, initializer_range), and the fusion scale starts at its configured value. The
    generator is seeded here so every rank draws the same weights whatever its global RNG has
    consumed. Returns the number of modules reset.
    """
    bert = model.text_model.bert
    in_bert = {id(m) for m in bert.modules()}
    count = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in modules:
            for sub in module.modules():
                if not any(True for _ in sub.parameters(recurse=False)):
                    continue
                if id(sub) in in_bert:
                    # BERT's own initialiser (HF). It skips tensors flagged as initialised,
                    # as HF's from_pretrained flags loaded weights: unflag them to redraw.
                    for param in sub.parameters(recurse=False):
                        param._is_hf_initialized = False
                    bert._init_weights(sub)
                elif hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()  # heads, projections, fusion, BatchNorm: defaults
                else:
                    raise TypeError(f"no initialiser known for {type(sub).__name__}")
                count += 1
            init_image_weights(module)  # no-op outside the image encoder
    return count
