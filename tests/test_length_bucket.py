"""Token lengths bucketed (data.length_bucket): few shapes per run, the same model outputs."""

from __future__ import annotations

import copy

import pytest
import torch

from forgetmi.config import DataConfig, ExperimentConfig, ModelConfig, load_config
from forgetmi.data.batches import batch_loader, to_device
from forgetmi.data.dataset import EdemaDataset, trim_padding
from forgetmi.data.prepare import build_datasets
from forgetmi.data.text import padded_length
from forgetmi.engine.sampling import BatchPlan
from forgetmi.config import ConfigError

BATCH = 4


@pytest.fixture(scope="module")
def run(demo_data):
    """What a run builds from its config: the accelerator and the partitions' datasets."""
    from forgetmi.engine.distributed import build_accelerator

    cfg = load_config(ExperimentConfig, None, [f"--data.root={demo_data.root}",
                                               "--data.image_size=48", "--text_encoder=tiny"])
    accelerator = build_accelerator(None, 1)
    data, datasets = build_datasets(cfg, accelerator)
    return cfg, accelerator, data, datasets


def rebucketed(dataset: EdemaDataset, bucket: int) -> EdemaDataset:
    """The same partition with another length_bucket (sharing its caches)."""
    out = copy.copy(dataset)
    out.length_bucket = bucket
    return out


def epoch_shapes(dataset: EdemaDataset, epoch: int = 0) -> set[tuple[int, int]]:
    """Distinct (batch, tokens) of one shuffled training epoch, through the engine's path."""
    plan = BatchPlan(len(dataset), BATCH, seed=0, stream="train", shuffle=True)
    batches = plan.epoch(epoch, plan.steps_per_epoch())
    return {tuple(to_device(b, "cpu")["input_ids"].shape) for b in batch_loader(dataset, batches)}


def test_padded_length_rounds_up_and_caps():
    assert [padded_length(n, 64, 320) for n in (1, 63, 64, 65, 300, 320)] == \
        [64, 64, 64, 128, 320, 320]
    assert [padded_length(n, b, 320) for n in (37, 0) for b in (0, 1)] == [37, 37, 1, 1]
    assert padded_length(100, 64, 96) == 96  # never wider than the rows (max_length)


def test_length_bucket_is_a_data_setting():
    assert DataConfig().length_bucket == 64
    with pytest.raises(ConfigError, match="length_bucket"):
        DataConfig(length_bucket=-1)


def test_trim_padding_keeps_every_token():
    mask = torch.zeros(3, 320, dtype=torch.int64)
    for row, n in enumerate((10, 70, 5)):
        mask[row, :n] = 1
    batch = {"input_ids": torch.arange(3 * 320).reshape(3, 320), "attention_mask": mask}
    assert trim_padding(batch)["input_ids"].shape == (3, 70)
    trimmed = trim_padding(batch, 64)
    assert trimmed["input_ids"].shape == (3, 128)
    assert int(trimmed["attention_mask"].sum()) == int(mask.sum())
    assert trim_padding(trimmed, 64)["input_ids"].shape == (3, 128)  # idempotent


def test_a_run_sees_a_handful_of_text_shapes(run):
    cfg, _, _, datasets = run
    train = datasets["retain"]
    assert train.length_bucket == cfg.data.length_bucket == 64
    bucketed = epoch_shapes(train) | epoch_shapes(train, epoch=1)
    exact = epoch_shapes(rebucketed(train, 1)) | epoch_shapes(rebucketed(train, 1), epoch=1)
    max_length = cfg.data.max_length
    assert all(length % 64 == 0 or length == max_length for _, length in bucketed)
    # at most max_length/64 lengths, times the full and the last, shorter batch size
    assert len(bucketed) <= max_length // 64 + 2, sorted(bucketed)
    assert len(exact) > 2 * len(bucketed), (sorted(exact), sorted(bucketed))


def test_the_text_encoder_sees_bucketed_shapes_in_an_epoch(run):
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel

    cfg, accelerator, _, datasets = run
    torch.manual_seed(0)
    model = JointModel(ModelConfig(text_encoder="tiny"))
    seen = set()
    model.text_model.register_forward_pre_hook(
        lambda module, args: seen.add(tuple(args[0].shape)))
    predict(accelerator, model, datasets["retain"], BATCH)
    assert seen and all(length % 64 == 0 for _, length in seen)
    assert len(seen) <= cfg.data.max_length // 64 + 2, sorted(seen)


def test_bucketing_changes_no_output(run):
    from forgetmi.models import JointModel

    _, _, _, datasets = run
    train = datasets["retain"]
    torch.manual_seed(0)
    model = JointModel(ModelConfig(text_encoder="tiny")).eval()
    plan = [[0, 5, 9, 30], [1, 2], [40, 41, 42, 43]]
    with torch.no_grad():
        for exact, bucketed in zip(batch_loader(rebucketed(train, 1), plan),
                                   batch_loader(train, plan)):
            exact, bucketed = to_device(exact, "cpu"), to_device(bucketed, "cpu")
            assert bucketed["input_ids"].shape[1] > exact["input_ids"].shape[1]
            a = model(exact["image"], exact["input_ids"], exact["attention_mask"])
            b = model(bucketed["image"], bucketed["input_ids"], bucketed["attention_mask"])
            for key in ("text_embedding", "text_logits", "joint_logits"):
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
