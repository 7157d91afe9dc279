"""Batches straight from the caches: identical to the per-sample dataset, buffers reused safely."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from forgetmi.config import DataConfig
from forgetmi.data.batches import BatchReader, to_device
from forgetmi.data.dataset import EdemaDataset, trim_padding
from forgetmi.config import Perturbation
from forgetmi.data.noise import build_perturber
from forgetmi.data.prepare import ensure_caches, load_partitions


@pytest.fixture(scope="module")
def prepared(demo_data):
    config = DataConfig(root=str(demo_data.root), image_size=48)
    return ensure_caches(load_partitions(config, seed=0), "tiny")


def reference_batch(dataset, positions):
    return trim_padding(default_collate([dataset[i] for i in positions]), dataset.length_bucket)


def kept(batch):
    """A batch that outlives the reader's buffers."""
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}


@pytest.mark.parametrize("bucket", [1, 16], ids=["exact", "bucketed"])
@pytest.mark.parametrize("noisy", [False, True], ids=["clean", "noisy"])
@pytest.mark.parametrize("prefetch", [False, True], ids=["direct", "prefetch"])
def test_batches_equal_the_per_sample_dataset(prepared, noisy, prefetch, bucket):
    perturb = build_perturber(Perturbation(seed=3), prepared.config.path("synonyms")) if noisy \
        else None
    reports = prepared.reports.set_index("study_id")["text"]
    dataset = EdemaDataset(prepared.partitions.retain, prepared.image_cache, prepared.token_cache,
                           perturb=perturb, reports=reports, length_bucket=bucket)
    plan = [[5, 0, 9, 9], [3, 1], [7, 2, 4, 8], [6]]
    batches = [kept(b) for b in BatchReader(dataset, plan, prefetch=prefetch)]
    assert len(batches) == len(plan)
    # noisy or not, images leave the reader as stored; a noisy batch carries its noise seeds
    assert batches[0]["image"].dtype == torch.uint16
    assert ("image_noise" in batches[0]) == noisy
    for positions, batch in zip(plan, batches):
        expected = reference_batch(dataset, positions)
        # uint16 images become the dataset's float32 values, its noise drawn as the dataset's
        batch = to_device(batch, "cpu")
        assert batch.keys() == expected.keys()
        for key in expected:
            assert batch[key].dtype == expected[key].dtype, key
            assert torch.equal(batch[key], expected[key]), key


def test_buffers_are_reused_and_never_overwritten_early(prepared):
    dataset = EdemaDataset(prepared.partitions.retain, prepared.image_cache, prepared.token_cache)
    plan = [[i, i + 1] for i in range(0, 20, 2)]
    seen = []
    for k, batch in enumerate(BatchReader(dataset, plan, buffers=3)):
        expected = reference_batch(dataset, plan[k])["image"]
        # intact while it is the current batch
        assert torch.equal(to_device(batch, "cpu")["image"], expected)
        seen.append(batch["image"].data_ptr())
    assert len(set(seen)) == 3  # three buffers, cycled


def test_errors_reach_the_consumer_and_early_exit_stops_the_thread(prepared):
    dataset = EdemaDataset(prepared.partitions.retain, prepared.image_cache, prepared.token_cache)
    with pytest.raises(IndexError):
        list(BatchReader(dataset, [[0], [10 ** 6]]))
    reader = BatchReader(dataset, [[i] for i in range(30)])
    for k, _ in enumerate(reader):
        if k == 2:
            break  # the producer thread must not hang the test


def test_noise_is_the_same_in_any_epoch_order_or_batch(prepared):
    """A sample's noise is seeded by its key alone, so a resumed run draws the same noise."""
    perturb = build_perturber(Perturbation(seed=3, use_text=False))
    dataset = EdemaDataset(prepared.partitions.retain, prepared.image_cache, prepared.token_cache,
                           perturb=perturb)
    clean = EdemaDataset(prepared.partitions.retain, prepared.image_cache, prepared.token_cache)

    def images(data, plan):
        out = {}
        for batch in BatchReader(data, plan):
            batch = to_device(batch, "cpu")
            out.update(zip(batch["index"].tolist(), batch["image"]))
        return out

    first = images(dataset, [[0, 1, 2], [3, 4]])
    again = images(dataset, [[4, 0], [3], [2, 1]])  # another epoch's order and batches
    plain = images(clean, [[0, 1, 2, 3, 4]])
    assert first.keys() == again.keys() == plain.keys()
    for index in first:
        assert torch.equal(first[index], again[index])
        assert not torch.equal(first[index], plain[index])
