"""Model hyper-parameters as a typed config (saved beside every checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    num_labels: int = 4
    # Image encoder: a stem then one stage of two BasicBlocks per width, each stage striding 2.
    image_widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 192, 192])
    image_pool: int = 2                 # final map pooled to pool x pool -> 192*2*2 = 768-d
    # Text encoder: a BERT folder (None = the packaged all-MiniLM-L6-v2), or "tiny" for a small
    # randomly initialised BERT over the packaged vocabulary (tests, smoke runs).
    text_encoder: str | None = None
    text_dropout: float = 0.1
    tiny_text_hidden: int = 32
    tiny_text_layers: int = 2
    fusion_scale_init: float = 0.1      # the learned, clamped residual scale of the gated fusion
    fusion_scale_max: float = 1.0
    # Provenance, recorded with the weights by training and import-checkpoint (not set by hand).
    origin: str = "forgetmi"            # forgetmi | release (published weights, imported)
    image_preprocessing: str = "forgetmi"  # what the weights learned on (data.preprocessing)
    # A release-origin model only ever saw 2048² crops (its pooling is a fixed 2×2 average);
    # true runs it at other sizes anyway, e.g. tests on small images.
    allow_other_image_size: bool = False

    @property
    def image_dim(self) -> int:
        return self.image_widths[-1] * self.image_pool * self.image_pool
