"""Loss terms checked against hand computations."""

from __future__ import annotations

import torch

from forgetmi.losses.supervised import ranking_loss


def loop_ranking(image, text, labels, studies, min_margin=0.5):
    """A direct per-sample transcription of the definition, for comparison."""
    n = len(labels)
    total = 0.0
    for i in range(n):
        j = (i + 1) % n
        if studies[i] == studies[j]:
            m = 0.0
        elif labels[i] < 0 or labels[j] < 0:
            m = min_margin
        else:
            m = max(min_margin, abs(float(labels[i] - labels[j])))
        s = float(image[i] @ text[i])
        total += max(0.0, m - s + float(image[j] @ text[i]))
        total += max(0.0, m - s + float(image[i] @ text[j]))
    return total / n


def test_ranking_loss_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(7, 5, generator=g) * 0.3, torch.randn(7, 5, generator=g) * 0.3
    labels = torch.tensor([0, 3, -1, 2, 2, 1, 0])
    studies = torch.tensor([10, 11, 12, 13, 13, 14, 15])  # rows 3 and 4 share a report
    expected = loop_ranking(image, text, labels, studies)
    assert abs(float(ranking_loss(image, text, labels, studies)) - expected) < 1e-6


def test_ranking_loss_hand_values():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # perfectly matched, orthogonal imposters: margin 3 (labels 0 vs 3) minus similarity 1 -> 2
    loss = ranking_loss(image, text, torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert torch.isclose(loss, torch.tensor(4.0))  # (2 + 2) per sample, both samples alike
    same_study = ranking_loss(image, text, torch.tensor([0, 3]), torch.tensor([1, 1]))
    assert float(same_study) == 0.0  # margin 0 and matched pairs beat imposters
    assert float(ranking_loss(image[:1], text[:1], torch.tensor([0]))) == 0.0


def test_optimizer_groups_give_bert_its_own_rate():
    from forgetmi.engine.optim import build_optimizer
    from forgetmi.config import ModelConfig
    from forgetmi.models import JointModel

    model = JointModel(ModelConfig(text_encoder="tiny"))
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01, text_lr=5e-5)
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["text_model.bert.encoder.layer.0.attention.self.query.weight"])]["lr"] == 5e-5
    assert by_param[id(named["text_model.classifier.weight"])]["lr"] == 1e-3
    assert by_param[id(named["img_model.conv1.weight"])]["lr"] == 1e-3
    assert by_param[id(named["img_model.conv1.weight"])]["weight_decay"] == 0.01
    assert by_param[id(named["img_model.bn1.weight"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)
    single = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    assert {g["lr"] for g in single.param_groups} == {1e-3}


def test_fused_optimizer_makes_the_same_update_within_rounding():
    """``train.fused_optimizer``: torch's fused AdamW kernel makes the per-tensor loop's update
    (the same gradients, two steps) up to rounding, over the same groups; the loop stays the
    default. Over a training the rounding compounds into a different model."""
    import copy

    from forgetmi.config import ExperimentConfig, ModelConfig
    from forgetmi.engine.optim import build_optimizer
    from forgetmi.models import JointModel

    assert ExperimentConfig().train.fused_optimizer is False
    torch.manual_seed(0)
    start = JointModel(ModelConfig(text_encoder="tiny"))
    out = start(torch.rand(2, 1, 64, 64), torch.randint(5, 100, (2, 12)),
                torch.ones(2, 12, dtype=torch.long))
    (out.joint_logits.square().mean() + out.image_logits.mean()).backward()
    after = []
    for fused in (False, True):
        model = copy.deepcopy(start)
        for mine, theirs in zip(model.parameters(), start.parameters()):
            mine.grad = None if theirs.grad is None else theirs.grad.clone()
        optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.01, fused=fused)
        assert all(bool(g.get("fused")) is fused for g in optimizer.param_groups)
        for _ in range(2):                  # the same gradients twice: moments and bias terms
            optimizer.step()
        after.append(dict(model.named_parameters()))
    loop, fused = after
    moved = [n for n in loop if not torch.equal(loop[n], start.get_parameter(n))]
    assert len(moved) > len(loop) // 2
    assert all(torch.allclose(loop[n], fused[n], rtol=0, atol=1e-6) for n in loop)
