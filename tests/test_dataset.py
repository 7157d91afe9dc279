"""EdemaDataset and build_loader over real caches: DICOM files -> image cache, reports -> tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from forgetmi.data.cache import build_image_cache
from forgetmi.data.dataset import EdemaDataset, build_loader
from forgetmi.data.formats import image_relpath
from forgetmi.data.images import write_dicom
from forgetmi.config import Perturbation
from forgetmi.data.noise import Perturber
from forgetmi.data.text import build_token_cache, default_text_encoder_path
from forgetmi.errors import CacheError, DataError

MAX_LENGTH = 48
IMAGE_SIZE = 32
PHRASES = ["mild pulmonary edema", "no pneumothorax", "cardiomegaly is stable",
           "bibasilar atelectasis", "clear lungs", "normal cardiac silhouette"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """12 images of 5 studies of 3 patients; the table is a partition (index = split row)."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    rows, reports = [], {}
    position = 0
    for patient in range(3):
        subject_id = 10000010 + patient
        for study in range(2 if patient < 2 else 1):
            study_id = 50000100 + 10 * patient + study
            words = [PHRASES[i] for i in rng.choice(len(PHRASES), size=3, replace=False)]
            reports[study_id] = f"The heart size is normal . {' , '.join(words)} . Chest clear ."
            for image in range(2 if patient < 2 else 4):
                dicom_id = f"dcm{patient}{study}{image}"
                pixels = rng.integers(200, 3800, size=(48, 40))
                write_dicom(root / "images" / image_relpath(subject_id, study_id, dicom_id),
                            pixels)
                rows.append((position, subject_id, study_id, dicom_id, int(rng.integers(4))))
                position += 3  # partition rows are scattered over the split
    table = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows],
                         columns=["subject_id", "study_id", "dicom_id", "severity"])
    table["fold"] = "1"
    image_cache = build_image_cache(table, root / "images", root / "img-cache", IMAGE_SIZE,
                                    crop_size=48)
    report_frame = pd.DataFrame({"study_id": list(reports), "label": "0",
                                 "text": list(reports.values())})
    token_cache = build_token_cache(report_frame, table, root / "tok-cache",
                                    default_text_encoder_path(), max_length=MAX_LENGTH)
    return table, image_cache, token_cache, reports


def test_items_have_the_contract_keys_dtypes_and_values(data):
    table, image_cache, token_cache, _ = data
    dataset = EdemaDataset(table, image_cache, token_cache)
    assert len(dataset) == len(table) == 12
    item = dataset[5]
    assert set(item) == {"image", "input_ids", "attention_mask", "label", "index",
                         "subject_id", "study_id"}
    assert item["image"].dtype == torch.float32
    assert item["image"].shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    for key in ("input_ids", "attention_mask"):
        assert item[key].dtype == torch.int64 and item[key].shape == (MAX_LENGTH,)
    for key in ("label", "index", "subject_id", "study_id"):
        assert item[key].dtype == torch.int64 and item[key].shape == ()
    row = table.iloc[5]
    assert int(item["index"]) == table.index[5] == 15
    assert (int(item["label"]), int(item["subject_id"]), int(item["study_id"])) == (
        row["severity"], row["subject_id"], row["study_id"])
    expected_image = image_cache.get(image_cache.index_of(row["dicom_id"]))
    np.testing.assert_array_equal(item["image"][0].numpy(), expected_image)
    ids, mask = token_cache.get(row["study_id"])
    assert item["input_ids"].tolist() == ids.tolist()
    assert item["attention_mask"].tolist() == mask.tolist()
    assert item["image"].numpy().flags.writeable


def test_noisy_items_differ_from_clean_and_are_identical_across_constructions(data):
    table, image_cache, token_cache, reports = data
    clean = EdemaDataset(table, image_cache, token_cache)
    make = lambda: EdemaDataset(table, image_cache, token_cache,
                                perturb=Perturber(Perturbation(seed=3)), reports=reports)
    noisy, again = make(), make()
    for i in range(len(table)):
        a, b, c = clean[i], noisy[i], again[i]
        assert not torch.equal(a["image"], b["image"])
        assert a["input_ids"].tolist() != b["input_ids"].tolist()
        for key in a:
            assert torch.equal(b[key], c[key]), key
        assert torch.equal(b["image"], noisy[i]["image"])          # same noise every epoch
        assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
        for key in ("label", "index", "subject_id", "study_id"):
            assert torch.equal(a[key], b[key])
    delta = torch.stack([noisy[i]["image"] - clean[i]["image"] for i in range(len(table))])
    assert 0.08 < float(delta.std()) < 0.11                          # sigma 0.1, a little clipped
    # Two images of one study get different noisy texts (noise keyed by image).
    same_study = [i for i in range(len(table)) if table["study_id"].iloc[i] == 50000120]
    texts = {tuple(noisy[i]["input_ids"].tolist()) for i in same_study}
    assert len(texts) == len(same_study) == 4


def test_perturbation_switches(data):
    table, image_cache, token_cache, reports = data
    clean = EdemaDataset(table, image_cache, token_cache)
    image_only = EdemaDataset(table, image_cache, token_cache,
                              perturb=Perturber(Perturbation(use_text=False)))
    text_only = EdemaDataset(table, image_cache, token_cache, reports=reports,
                             perturb=Perturber(Perturbation(use_image=False)))
    assert torch.equal(image_only[0]["input_ids"], clean[0]["input_ids"])
    assert not torch.equal(image_only[0]["image"], clean[0]["image"])
    assert torch.equal(text_only[0]["image"], clean[0]["image"])
    assert not torch.equal(text_only[0]["input_ids"], clean[0]["input_ids"])
    with pytest.raises(ValueError, match="reports"):
        EdemaDataset(table, image_cache, token_cache, perturb=Perturber())
    partial = {k: v for k, v in reports.items() if k != 50000111}
    with pytest.raises(DataError) as info:
        EdemaDataset(table, image_cache, token_cache, perturb=Perturber(), reports=partial)
    first = int(np.flatnonzero(table["study_id"].to_numpy() == 50000111)[0])
    assert (info.value.row, info.value.field) == (table.index[first] + 2, "study_id")


def test_tables_the_caches_do_not_cover_are_refused(data):
    table, image_cache, token_cache, _ = data
    with pytest.raises(CacheError):
        EdemaDataset(table.assign(dicom_id="unknown"), image_cache, token_cache)
    with pytest.raises(CacheError):
        EdemaDataset(table.assign(study_id=59999999), image_cache, token_cache)
    with pytest.raises(ValueError, match="row position"):
        EdemaDataset(table.set_index("dicom_id", drop=False), image_cache, token_cache)


def order(loader, epochs=2):
    return [[int(i) for batch in loader for i in batch["index"]] for _ in range(epochs)]


def test_loader_order_is_reproducible_for_a_seed(data):
    table, image_cache, token_cache, _ = data
    dataset = EdemaDataset(table, image_cache, token_cache)
    first = order(build_loader(dataset, batch_size=5, shuffle=True, seed=7))
    assert first == order(build_loader(dataset, batch_size=5, shuffle=True, seed=7))
    assert first[0] != first[1]                                     # reshuffled each epoch
    assert sorted(first[0]) == sorted(table.index)
    assert first != order(build_loader(dataset, batch_size=5, shuffle=True, seed=8))
    assert order(build_loader(dataset, 5, shuffle=False, seed=0), 1)[0] == list(table.index)
    dropped = order(build_loader(dataset, 5, shuffle=True, seed=7, drop_last=True), 1)[0]
    assert len(dropped) == 10

    # Worker processes reopen the caches and yield exactly the same batches.
    with_workers = build_loader(dataset, batch_size=5, shuffle=True, seed=7, num_workers=2)
    assert order(with_workers) == first
    transient = build_loader(dataset, batch_size=5, shuffle=True, seed=7, num_workers=2,
                             persistent_workers=False)
    assert order(transient) == first
    batch = next(iter(with_workers))
    assert batch["image"].shape == (5, 1, IMAGE_SIZE, IMAGE_SIZE)
    reference = [dataset[int(np.flatnonzero(table.index == int(i))[0])] for i in batch["index"]]
    assert torch.equal(batch["image"], torch.stack([r["image"] for r in reference]))
    assert torch.equal(batch["input_ids"], torch.stack([r["input_ids"] for r in reference]))
