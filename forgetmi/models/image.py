"""Image encoder: the ResNet of BasicBlocks used by the Forget-MI / Chauhan et al. model.

Module names follow the published checkpoint (``conv1``, ``bn1``, ``layer1``..``layer7``,
``fc1``) so its state dict loads without renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _stage(in_planes: int, planes: int) -> nn.Sequential:
    downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=2, bias=False),
                               nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(in_planes, planes, stride=2, downsample=downsample),
                         BasicBlock(planes, planes))


def init_image_weights(module: nn.Module) -> None:
    """The encoder's own initialisation on top of PyTorch's defaults, for ``module`` and below.

    Used at construction and by EU-k's re-initialisation (:mod:`forgetmi.models.layers`), so a
    re-initialised stage starts where a new model's would.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    # Each residual branch starts as the identity (zero last-BN scale): seven stages of
    # Kaiming-initialised blocks otherwise inflate the embedding, and with it the dot
    # products of the ranking loss, by orders of magnitude before training starts.
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


class ImageEncoder(nn.Module):
    """7×7/4 stem (no max-pool), 7 stages striding 2, adaptive pool to a fixed 768-d embedding.

    At 2048² the last map is 4×4 and the pool is the paper's 2×2 average; smaller inputs pool
    adaptively to the same size, so every resolution yields the same embedding width. Weights
    imported from the release (a fixed ``AvgPool2d(2)``) are only run at 2048² for that reason
    (see :mod:`forgetmi.models.provenance`).
    """

    def __init__(self, widths: list[int], pool: int = 2, num_labels: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], kernel_size=7, stride=4, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        for k, planes in enumerate(widths, start=1):
            setattr(self, f"layer{k}", _stage(in_planes, planes))
            in_planes = planes
        self.num_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.embed_dim = widths[-1] * pool * pool
        self.fc1 = nn.Linear(self.embed_dim, num_labels)
        init_image_weights(self)

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(image)))
        for k in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{k}")(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(image)
        return embedding, self.fc1(embedding)
