"""The gated image-text fusion that yields the joint embedding.

One module, trained with the original model and carried into unlearning, so the original and
the unlearned model's joint embeddings live in the same space (the released code re-created
this gate with random weights at every step and once passed the image embedding twice).
"""

from __future__ import annotations

import torch
from torch import nn


class GatedFusion(nn.Module):
    """out = LayerNorm(i + a * adjust), adjust = W_a [i; g * t], g = sigmoid(W_g [i; t])."""

    def __init__(self, image_dim: int, text_dim: int, scale_init: float = 0.1,
                 scale_max: float = 1.0):
        super().__init__()
        self.gate = nn.Linear(image_dim + text_dim, text_dim)
        self.adjust = nn.Linear(image_dim + text_dim, image_dim)
        self.norm = nn.LayerNorm(image_dim)
        # Shape (1,), not a 0-dim scalar: DeepSpeed's broadcasts view parameters as bytes.
        self.scale_init = float(scale_init)
        self.scale = nn.Parameter(torch.full((1,), self.scale_init))
        self.scale_max = scale_max

    def reset_parameters(self) -> None:
        """Reset this module's own parameter, the scale, to its initial value (as
        ``nn.Module.reset_parameters`` does; gate, adjust and norm reset themselves)."""
        with torch.no_grad():
            self.scale.fill_(self.scale_init)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([image, text], dim=-1)))
        adjust = self.adjust(torch.cat([image, gate * text], dim=-1))
        # The clamp keeps the text's share bounded so the image path cannot be drowned out.
        scale = self.scale.clamp(-self.scale_max, self.scale_max)
        return self.norm(image + scale * adjust)
