"""The public Forget-MI release's joint image–text model, transcribed for the parity test only.

What it transcribes: ``joint_img_txt/model.py`` of the release (BioMedIA-MBZUAI/Forget-MI, the
Chauhan et al. 2020 model it builds on): ``ImageTextModel`` with its ``ImageResNet`` image
embedder (own BasicBlock, 7×7/4 stem without max-pool, seven stages of two blocks striding 2,
a fixed ``AvgPool2d(2)`` and ``fc1`` 768 → labels), its ``TextBertForSequenceClassification``
(a BERT whose pooled [CLS] output, after dropout, is the text embedding and feeds
``classifier``), and the joint ``classifier`` (768 → labels) that the model owns but never
calls. Module and parameter names are the release's, so ``state_dict()`` has exactly the keys
of a published ``pytorch_model.bin``, and :meth:`ReleaseImageTextModel.save_pretrained` writes
the folder the release writes (the BERT ``config.json`` and ``torch.save`` of the state dict).

It exists only so ``tests/test_release_parity.py`` can check forgetmi's import against an
implementation written from the release rather than from forgetmi; nothing in the package
imports it. Written independently (no torchvision blocks, no forgetmi modules). Left out as
irrelevant to the compared outputs: the options that feed image features into BERT
(``bert_pool_*``, off in the release's configs), the attention outputs, the release's
``from_pretrained`` (forgetmi's importer is what is under test) and the ``cuda`` device the
release hard-codes inside ``forward``. The release's joint embedding is not here either: its
unlearning script computes it outside the model with a ``Gate`` created afresh, with random
weights, at every step, so it is not a function of the published weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel

RELEASE_STAGE_WIDTHS = (8, 16, 32, 64, 128, 192, 192)
RELEASE_BLOCKS_PER_STAGE = (2, 2, 2, 2, 2, 2, 2)


def release_bert_config(**overrides) -> BertConfig:
    """The BERT config the release saves beside its weights (SciBERT scivocab-uncased size:
    BERT-base with a 31,090-token vocabulary, four labels). The release's text model also sets
    ``output_hidden_states`` on it, so the saved file carries that too."""
    values = dict(vocab_size=31090, hidden_size=768, num_hidden_layers=12,
                  num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                  max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
                  layer_norm_eps=1e-12, pad_token_id=0, num_labels=4)
    values.update(overrides)
    return BertConfig(**values)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ReleaseBasicBlock(nn.Module):
    """Two 3×3 convs with BN; the first (and the 1×1 ``downsample``) carry the stride."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut
        return self.relu(out)


class ReleaseImageResNet(nn.Module):
    """The release's ``ImageResNet``: 2048² → 8@512² stem → seven stages → 192@4² → 2×2 average
    pool → 768-d embedding ``z`` and ``fc1`` logits."""

    def __init__(self, num_labels: int = 4, widths=RELEASE_STAGE_WIDTHS,
                 blocks=RELEASE_BLOCKS_PER_STAGE):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(1, self.in_planes, kernel_size=7, stride=4, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.in_planes)
        self.relu = nn.ReLU(inplace=True)
        for k, (planes, count) in enumerate(zip(widths, blocks), start=1):
            setattr(self, f"layer{k}", self._make_layer(planes, count, stride=2))
        self.num_stages = len(widths)
        self.avgpool = nn.AvgPool2d((2, 2))  # fixed: reads the 4×4 map of a 2048² input
        self.fc1 = nn.Linear(768, num_labels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes:
            downsample = nn.Sequential(_conv1x1(self.in_planes, planes, stride),
                                       nn.BatchNorm2d(planes))
        blocks = [ReleaseBasicBlock(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes
        blocks += [ReleaseBasicBlock(planes, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        for k in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{k}")(x)
        z = torch.flatten(self.avgpool(x), 1)
        return z, self.fc1(z)


class ReleaseTextBert(nn.Module):
    """The release's ``TextBertForSequenceClassification``: the embedding is the pooled [CLS]
    output *after* dropout (the same thing in eval mode), the logits ``classifier`` of it.

    The release derives it from ``BertPreTrainedModel`` but overrides its weight initialisation
    with a no-op; a plain module with the same children has the same names and outputs."""

    def __init__(self, config: BertConfig):
        super().__init__()
        config.output_hidden_states = True  # the release sets this on the shared config
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config)  # with its pooler, as the release's checkpoints have
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None):
        outputs = self.bert(input_ids, token_type_ids=token_type_ids,
                            attention_mask=attention_mask)
        pooled = self.dropout(outputs[1])
        return pooled, self.classifier(pooled)


class ReleaseImageTextModel(nn.Module):
    """The release's ``ImageTextModel``; ``forward`` returns ``(z_img, logits_img, z_txt,
    logits_txt)`` as the release's does (its ``classifier`` is never called)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # Registration order is the release's, so state_dict() lists keys in its order too.
        self.text_model = ReleaseTextBert(config)
        self.img_model = ReleaseImageResNet(num_labels=config.num_labels)
        self.config = config
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_img: torch.Tensor, input_ids: torch.Tensor,
                token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None):
        z_img, logits_img = self.img_model(input_img)
        z_txt, logits_txt = self.text_model(input_ids, token_type_ids=token_type_ids,
                                            attention_mask=attention_mask)
        return z_img, logits_img, z_txt, logits_txt

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """What the release writes: the BERT config and ``pytorch_model.bin`` (a plain
        ``torch.save`` of the whole state dict)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(directory)
        torch.save(self.state_dict(), directory / "pytorch_model.bin")
        return directory
