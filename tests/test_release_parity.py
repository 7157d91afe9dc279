"""Published weights, imported, compute bit for bit what the release's own model computes.

At full size: the release's BERT-base text model (SciBERT's 31,090-token vocabulary, as the
release's saved config has it), the full-width image encoder, one 2048² image and one
320-token report (the release's ``max_seq_length``), in eval mode. The release side is an
independent transcription of its model class (:mod:`tests.release_model`); it writes the
published folder the way the release does, and forgetmi imports it through
:func:`~forgetmi.models.checkpoint.import_published_checkpoint`, the function behind
``forgetmi import-checkpoint``.

Compared: every weight and buffer, the image and text embeddings and the image and text
logits. Not compared: the joint embedding and joint logits. The release's model has no joint
output (its ``classifier`` is never called); its unlearning script fuses the two embeddings
with a ``Gate`` drawn with fresh random weights at every step, so there is nothing fixed to
match, and forgetmi's fusion is a new, seeded module that the import log says must be fitted.
"""

from __future__ import annotations

import os

import pytest
import torch

from forgetmi.models.checkpoint import import_published_checkpoint
from tests.published import tokenizer_folder
from tests.release_model import RELEASE_STAGE_WIDTHS, ReleaseImageTextModel, release_bert_config

pytestmark = pytest.mark.slow

RELEASE_WEIGHT_COUNT = 421  # BERT-base 199 + text classifier 2 + image encoder 218 + classifier 2
SEQ_LEN = 320


@pytest.fixture
def cpu_threads():
    """Both models on the same, fixed number of threads (the machine's two cores at most)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(before)


def _as_if_trained(model: ReleaseImageTextModel) -> None:
    """Values a fresh init leaves trivial (BatchNorm statistics and affines, LayerNorm, biases)
    made non-trivial, so a tensor dropped or swapped on import cannot go unnoticed."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(4321)
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.1, 0.1)
            elif param.ndim == 1:  # BatchNorm and LayerNorm scales
                param.uniform_(0.5, 1.5)


def _forgetmi_key(published_key: str) -> str:
    # The release's unused joint head is forgetmi's joint_head; every other name is kept.
    return "joint_head." + published_key[len("classifier."):] \
        if published_key.startswith("classifier.") else published_key


def test_imported_release_weights_reproduce_the_release_model_bit_for_bit(tmp_path, cpu_threads):
    config = release_bert_config()
    torch.manual_seed(2025)
    release = ReleaseImageTextModel(config)
    _as_if_trained(release)
    release.eval()
    folder = release.save_pretrained(tmp_path / "original_model")
    scivocab = tokenizer_folder(tmp_path / "scivocab", config.vocab_size)

    published = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True,
                           mmap=True)
    assert len(published) == RELEASE_WEIGHT_COUNT
    model = import_published_checkpoint(folder, text_encoder=str(scivocab)).eval()

    # Every published tensor arrives unchanged, under its own name; only the fusion is new.
    imported = model.state_dict()
    names = {_forgetmi_key(k) for k in published}
    assert {k for k in imported if k not in names} == {k for k in imported
                                                       if k.startswith("fusion.")}
    for key, value in published.items():
        ours = imported[_forgetmi_key(key)]
        assert ours.dtype == value.dtype and torch.equal(ours, value), key
    assert model.config.origin == "release" and model.config.image_preprocessing == "release"
    assert model.config.image_widths == list(RELEASE_STAGE_WIDTHS)
    assert model.config.image_pool == 2 and model.text_model.proj is None

    # One 2048² image in [0, 1] (the release divides by the image max) and one padded report:
    # [CLS], 200 word pieces, [SEP], then [PAD] to 320 with a zero mask and zero segment ids.
    generator = torch.Generator().manual_seed(7)
    image = torch.rand(1, 1, 2048, 2048, generator=generator)
    words = torch.randint(999, config.vocab_size, (1, 200), generator=generator)
    input_ids = torch.zeros(1, SEQ_LEN, dtype=torch.long)
    input_ids[:, :202] = torch.cat([torch.tensor([[102]]), words, torch.tensor([[103]])], dim=1)
    attention_mask = (input_ids != 0).long()
    with torch.no_grad():
        z_img, logits_img, z_txt, logits_txt = release(
            image, input_ids, token_type_ids=torch.zeros_like(input_ids),
            attention_mask=attention_mask)
        out = model(image, input_ids, attention_mask)

    assert z_img.shape == z_txt.shape == (1, 768)
    assert z_img.std() > 1e-3 and z_txt.std() > 1e-3  # neither embedding degenerate
    for name, theirs, ours in (("image embedding", z_img, out.image_embedding),
                               ("image logits", logits_img, out.image_logits),
                               ("text embedding", z_txt, out.text_embedding),
                               ("text logits", logits_txt, out.text_logits)):
        assert torch.equal(ours, theirs), \
            f"{name}: max |Δ| {(ours - theirs).abs().max().item():.3g}"
    assert out.joint_embedding.shape == (1, 768)  # computed, but by the new fusion (see top)
    (folder / "pytorch_model.bin").unlink()  # 440 MB; pytest keeps the last runs' tmp folders
