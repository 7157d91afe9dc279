"""Each Forget-MI loss term on hand-built embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from forgetmi.losses.forgetmi import (PRESETS, LossWeights, forgetmi_loss, mean_distance,
                                      multimodal_distance, unimodal_distance)
from forgetmi.models.joint import ModelOutput


def out(image, text, joint):
    return ModelOutput(image_embedding=torch.tensor(image, dtype=torch.float32),
                       text_embedding=torch.tensor(text, dtype=torch.float32),
                       joint_embedding=torch.tensor(joint, dtype=torch.float32))


# two samples; image 2-d, text 1-d, joint 2-d
UL_F = out([[0, 0], [1, 1]], [[0], [2]], [[0, 0], [0, 0]])
OG_NF = out([[3, 4], [1, 1]], [[0], [2]], [[6, 8], [0, 3]])   # UU: (5 + 0)/2; MU: (10 + 3)/2
UL_R = out([[1, 0], [0, 0]], [[0], [0]], [[1, 1], [2, 2]])
OG_R = out([[1, 0], [0, 0]], [[2], [0]], [[1, 1], [2, 2]])    # UR: (2 + 0)/2;  MR: 0


def test_terms_by_hand():
    assert float(unimodal_distance(UL_F, OG_NF)) == pytest.approx(2.5)
    assert float(multimodal_distance(UL_F, OG_NF)) == pytest.approx(6.5)
    assert float(unimodal_distance(UL_R, OG_R)) == pytest.approx(1.0)
    assert float(multimodal_distance(UL_R, OG_R)) == pytest.approx(0.0)
    # the concatenation matters: per-sample sqrt(dimg^2 + dtxt^2), not dimg + dtxt
    a = out([[3, 0]], [[4]], [[0, 0]])
    b = out([[0, 0]], [[0]], [[0, 0]])
    assert float(unimodal_distance(a, b)) == pytest.approx(5.0)


def test_total_weights_are_normalised():
    total, terms = forgetmi_loss(UL_F, OG_NF, UL_R, OG_R, LossWeights(4, 4, 1, 1))
    assert terms == pytest.approx({"uu": 2.5, "mu": 6.5, "ur": 1.0, "mr": 0.0})
    assert float(total) == pytest.approx(0.4 * 2.5 + 0.1 * 6.5 + 0.4 * 1.0 + 0.1 * 0.0)
    same, _ = forgetmi_loss(UL_F, OG_NF, UL_R, OG_R, PRESETS["unimodal"])
    assert float(same) == pytest.approx(float(total))


def test_push_variant_flips_only_the_unlearning_terms():
    total, _ = forgetmi_loss(UL_F, OG_NF, UL_R, OG_R, PRESETS["equal"], objective="push")
    assert float(total) == pytest.approx(0.25 * (-2.5 - 6.5 + 1.0 + 0.0))
    with pytest.raises(ValueError, match="objective"):
        forgetmi_loss(UL_F, OG_NF, UL_R, OG_R, PRESETS["equal"], objective="sideways")


def test_retention_cap_clamps_value_and_gradient():
    ul_r = out([[1, 0], [0, 0]], [[0], [0]], [[1, 1], [2, 2]])
    ul_r.image_embedding.requires_grad_(True)
    total, terms = forgetmi_loss(UL_F, OG_NF, ul_r, OG_R, LossWeights(0, 1, 0, 0),
                                 retention_caps={"ur": 0.5})
    assert terms["ur"] == pytest.approx(1.0) and float(total.detach()) == pytest.approx(0.5)
    total.backward()
    assert float(ul_r.image_embedding.grad.abs().sum()) == 0.0


def test_presets_match_the_paper():
    assert PRESETS["unimodal"] == LossWeights(0.4, 0.4, 0.1, 0.1)
    assert PRESETS["multimodal"] == LossWeights(0.1, 0.1, 0.4, 0.4)
    assert PRESETS["retention"] == LossWeights(0.1, 0.4, 0.1, 0.4)
    for weights in PRESETS.values():
        n = weights.normalised()
        assert math.isclose(n.uu + n.ur + n.mu + n.mr, 1.0)
    with pytest.raises(ValueError):
        LossWeights(0, 0, 0, 0).normalised()


def test_gradient_pulls_forget_embeddings_towards_the_noisy_targets():
    ul = out([[0.0, 0.0]], [[0.0]], [[0.0, 0.0]])
    og = out([[1.0, 0.0]], [[0.0]], [[0.0, 1.0]])
    for tensor in (ul.image_embedding, ul.joint_embedding):
        tensor.requires_grad_(True)
    total, _ = forgetmi_loss(ul, og, og, og, PRESETS["equal"])
    total.backward()
    assert float(ul.image_embedding.grad[0, 0]) < 0   # descending moves it towards +1
    assert float(ul.joint_embedding.grad[0, 1]) < 0
    assert float(mean_distance(og.image_embedding, og.image_embedding)) == 0.0
