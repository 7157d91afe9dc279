"""The decode-once image cache: round trip, staleness, atomic builds, errors, workers."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from forgetmi.data.cache import (ARRAY_FILE, INDEX_FILE, ImageCache, build_image_cache,
                                 cache_is_current, expected_meta)
from forgetmi.data.formats import image_relpath, read_split, resolve_image_path
from forgetmi.data.images import load_image, write_dicom
from forgetmi.errors import CacheError, DataError

IMAGE_SIZE, CROP = 32, 64


def _write_dataset(root: Path, n_rows: int, seed: int = 0, side: tuple[int, int] = (50, 110)):
    """A split CSV plus MIMIC-layout images: mostly 12-bit DICOM, one MONOCHROME1, a PNG, an NPY."""
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    rows = []
    for i in range(n_rows):
        subject, study, dicom = 10000000 + i // 2, 50000000 + i, f"img{i:04d}"
        shape = tuple(int(v) for v in rng.integers(side[0], side[1], 2))
        pixels = rng.integers(0, 4096, shape, dtype=np.uint16)
        if i == 3:  # a 16-bit PNG
            path = img_dir / image_relpath(subject, study, dicom, ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels * 16).save(path)
        elif i == 4:
            path = img_dir / image_relpath(subject, study, dicom, ".npy")
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, pixels)
        else:
            write_dicom(img_dir / image_relpath(subject, study, dicom, ".dcm"), pixels,
                        photometric="MONOCHROME1" if i == 5 else "MONOCHROME2")
        rows.append((subject, study, dicom, i % 4, str(1 + (i // 2) % 5)))
    split = root / "split.csv"
    pd.DataFrame(rows, columns=["subject_id", "study_id", "dicom_id", "edeme_severity", "fold"]
                 ).to_csv(split, index=False)
    return read_split(split), img_dir, split


@pytest.fixture
def dataset(tmp_path):
    table, img_dir, split = _write_dataset(tmp_path / "data", 10)
    return table, img_dir, split


def _path(table, img_dir, i):
    row = table.iloc[i]
    return resolve_image_path(img_dir, row.subject_id, row.study_id, row.dicom_id)


def test_roundtrip_equals_direct_decode(dataset, tmp_path):
    table, img_dir, split = dataset
    cache = build_image_cache(table, img_dir, tmp_path / "cache", IMAGE_SIZE, CROP, source=split)
    assert len(cache) == 10 and cache.image_size == IMAGE_SIZE and cache.crop_size == CROP
    assert cache.dicom_ids == list(table["dicom_id"])
    assert {p.suffix for p in (_path(table, img_dir, i) for i in range(10))} == {".dcm", ".png", ".npy"}
    for i in range(10):
        direct = load_image(_path(table, img_dir, i), IMAGE_SIZE, CROP)
        cached = cache.get(i)
        assert cached.dtype == np.float32 and cached.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert np.abs(cached - direct).max() <= 1 / 65535
        assert cache.index_of(table["dicom_id"].iloc[i]) == i
    raw = cache.get_raw(5)
    assert raw.dtype == np.uint16 and raw.flags.writeable
    np.testing.assert_array_equal(raw / np.float32(65535), cache.get(5))
    batch = cache.get_many([7, 2, 2])
    np.testing.assert_array_equal(batch, np.stack([cache.get(7), cache.get(2), cache.get(2)]))
    reopened = ImageCache.open(tmp_path / "cache",
                               expect=expected_meta(table, img_dir, IMAGE_SIZE, CROP))
    np.testing.assert_array_equal(reopened.get(4), cache.get(4))
    with pytest.raises(CacheError, match="no entry"):
        cache.index_of("not-there")


def test_default_crop_is_image_size(dataset, tmp_path):
    table, img_dir, _ = dataset
    cache = build_image_cache(table.iloc[:3], img_dir, tmp_path / "c", 48)
    assert cache.crop_size == 48
    assert np.abs(cache.get(1) - load_image(_path(table, img_dir, 1), 48)).max() <= 1 / 65535


def test_multi_worker_build_equals_single_worker(dataset, tmp_path):
    table, img_dir, split = dataset
    one = build_image_cache(table, img_dir, tmp_path / "one", IMAGE_SIZE, CROP, workers=1)
    two = build_image_cache(table, img_dir, tmp_path / "two", IMAGE_SIZE, CROP, workers=2)
    np.testing.assert_array_equal(np.asarray(one.array), np.asarray(two.array))
    assert np.asarray(two.array).min(axis=(1, 2)).max() < np.asarray(two.array).max()  # not empty
    assert one.fingerprint == two.fingerprint


def test_stale_cache_is_detected(dataset, tmp_path):
    table, img_dir, split = dataset
    target = tmp_path / "cache"
    build_image_cache(table, img_dir, target, IMAGE_SIZE, CROP)
    assert cache_is_current(target, table, img_dir, IMAGE_SIZE, CROP)

    with pytest.raises(CacheError, match="another resolution"):
        ImageCache.open(target, expect=expected_meta(table, img_dir, 16, CROP))
    assert not cache_is_current(target, table, img_dir, IMAGE_SIZE, 96)

    with pytest.raises(CacheError, match="other data"):
        ImageCache.open(target, expect=expected_meta(table.iloc[:-1], img_dir, IMAGE_SIZE, CROP))
    with pytest.raises(CacheError, match="row order"):
        ImageCache.open(target, expect=expected_meta(table.iloc[::-1], img_dir, IMAGE_SIZE, CROP))

    # Same ids, but one source image was rewritten: the fingerprint changes.
    changed = _path(table, img_dir, 0)
    write_dicom(changed, np.full((70, 70), 9, dtype=np.uint16))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(CacheError, match="source images changed"):
        ImageCache.open(target, expect=expected_meta(table, img_dir, IMAGE_SIZE, CROP))
    assert not cache_is_current(target, table, img_dir, IMAGE_SIZE, CROP)

    rebuilt = build_image_cache(table, img_dir, target, IMAGE_SIZE, CROP)
    assert cache_is_current(target, table, img_dir, IMAGE_SIZE, CROP)
    assert np.unique(rebuilt.get(0)[12:20, 12:20]).tolist() == [1.0]


def test_incomplete_cache_folder_is_rejected(dataset, tmp_path):
    table, img_dir, _ = dataset
    target = tmp_path / "cache"
    with pytest.raises(CacheError, match="no complete image cache"):
        ImageCache.open(target)
    build_image_cache(table, img_dir, target, IMAGE_SIZE, CROP)
    array = np.load(target / ARRAY_FILE)
    np.save(target / ARRAY_FILE, array[:-1])  # one row short
    with pytest.raises(CacheError, match="incomplete"):
        ImageCache.open(target)
    (target / INDEX_FILE).write_text("{not json")
    with pytest.raises(CacheError, match="unreadable"):
        ImageCache.open(target)
    (target / INDEX_FILE).unlink()
    with pytest.raises(CacheError, match="no complete"):
        ImageCache.open(target)


def test_failed_build_leaves_no_cache_and_keeps_the_old_one(dataset, tmp_path):
    table, img_dir, split = dataset
    bad = _path(table, img_dir, 6)
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # truncated DICOM

    fresh = tmp_path / "fresh"
    with pytest.raises(DataError) as info:
        build_image_cache(table, img_dir, fresh, IMAGE_SIZE, CROP, source=split)
    assert info.value.path == str(bad)
    assert f"line 8 of {split}" in str(info.value)
    assert not fresh.exists()
    assert not list(tmp_path.glob("*.tmp"))  # no temporary left behind

    bad.write_bytes(good_bytes)
    old = build_image_cache(table, img_dir, tmp_path / "old", IMAGE_SIZE, CROP)
    before = np.asarray(old.array).copy()
    bad.write_bytes(b"garbage" * 50)
    with pytest.raises(DataError, match="DICOM"):
        build_image_cache(table, img_dir, tmp_path / "old", 16, CROP, workers=2)
    intact = ImageCache.open(tmp_path / "old")
    assert intact.image_size == IMAGE_SIZE
    np.testing.assert_array_equal(np.asarray(intact.array), before)


def _build_in_child(table_path: str, img_dir: str, target: str) -> None:
    build_image_cache(read_split(table_path), img_dir, target, 256, 1024)


def test_killed_build_is_never_read_as_valid(tmp_path):
    table, img_dir, split = _write_dataset(tmp_path / "big", 40, side=(900, 1000))
    target = tmp_path / "cache"
    child = multiprocessing.get_context("spawn").Process(
        target=_build_in_child, args=(str(split), str(img_dir), str(target)))
    child.start()
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".cache.*.tmp/payload/images.npy")):
        assert time.monotonic() < deadline and child.is_alive(), "build never started"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL  # killed mid-build, not finished
    assert not target.exists()
    with pytest.raises(CacheError):
        ImageCache.open(target)
    assert not cache_is_current(target, table, img_dir, 256, 1024)
    # The next build clears the dead build's temporary and produces a valid cache.
    assert list(tmp_path.glob(".cache.*.tmp"))
    cache = build_image_cache(table.iloc[:2], img_dir, target, 64, 64)
    assert not list(tmp_path.glob(".cache.*.tmp")) and len(cache) == 2


def test_concurrent_builders_share_one_cache(dataset, tmp_path):
    table, img_dir, split = dataset
    target = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_build_in_child, args=(str(split), str(img_dir), str(target)))
                for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert cache_is_current(target, table, img_dir, 256, 1024)
    assert not list(tmp_path.glob(".cache.*.tmp"))


def test_missing_image_names_the_split_line(dataset, tmp_path):
    table, img_dir, split = dataset
    _path(table, img_dir, 4).unlink()
    _path(table, img_dir, 7).unlink()
    with pytest.raises(DataError) as info:
        build_image_cache(table, img_dir, tmp_path / "cache", IMAGE_SIZE, CROP, source=split)
    err = info.value
    assert err.path == str(split) and err.row == 6 and err.field == "dicom_id"
    assert "2 of 10 images are missing" in str(err)
    assert not (tmp_path / "cache").exists()
    # a partition keeps the split's index, so the line is still the split's line
    with pytest.raises(DataError) as info:
        build_image_cache(table.iloc[5:], img_dir, tmp_path / "cache", IMAGE_SIZE, CROP,
                          source=split)
    assert info.value.row == 9 and "1 of" not in str(info.value)
    # without a source file the message still names the row and the image path
    with pytest.raises(DataError, match="table row 4"):
        build_image_cache(table, img_dir, tmp_path / "cache", IMAGE_SIZE, CROP)
    # nothing is skipped: an explicit extension that does not exist is also missing
    with pytest.raises(DataError, match="not found"):
        build_image_cache(table.iloc[:2], img_dir, tmp_path / "cache", IMAGE_SIZE, CROP, ext=".png")


class CachedImages:
    """Minimal map-style dataset over the cache (the real one lives in forgetmi.data.dataset)."""

    def __init__(self, cache: ImageCache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        import torch
        return torch.from_numpy(self.cache.get(i))


def test_cache_survives_pickling_and_dataloader_workers(dataset, tmp_path):
    import torch
    from torch.utils.data import DataLoader

    table, img_dir, _ = dataset
    cache = build_image_cache(table, img_dir, tmp_path / "cache", IMAGE_SIZE, CROP)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._array is None  # the mapping itself is not pickled
    np.testing.assert_array_equal(clone.get(3), cache.get(3))

    # Default (fork) workers inherit the parent's mapping; the cache must remap per process.
    loader = DataLoader(CachedImages(cache), batch_size=5, num_workers=2)
    batches = torch.cat(list(loader))
    np.testing.assert_array_equal(batches.numpy(), cache.get_many(range(len(cache))))


def test_preprocessing_modes_are_separate_caches(dataset, tmp_path):
    """The same files cached the forgetmi and the release way are never taken for each other."""
    table, img_dir, split = dataset
    ours = build_image_cache(table, img_dir, tmp_path / "ours", IMAGE_SIZE, CROP)
    release = build_image_cache(table, img_dir, tmp_path / "release", IMAGE_SIZE, CROP,
                                preprocessing="release")
    assert (ours.preprocessing, release.preprocessing) == ("forgetmi", "release")
    assert ours.fingerprint != release.fingerprint
    wanted = expected_meta(table, img_dir, IMAGE_SIZE, CROP, preprocessing="forgetmi")
    assert wanted["fingerprint"] == ours.fingerprint
    with pytest.raises(CacheError, match="release preprocessing, wanted forgetmi"):
        ImageCache.open(tmp_path / "release", expect=wanted)
    assert not cache_is_current(tmp_path / "release", table, img_dir, IMAGE_SIZE, CROP)
    assert cache_is_current(tmp_path / "release", table, img_dir, IMAGE_SIZE, CROP,
                            preprocessing="release")
    # Plain MONOCHROME2 DICOMs read alike; the MONOCHROME1 file (row 5) is inverted only by ours.
    assert np.array_equal(ours.get(0), release.get(0))
    assert np.abs(ours.get(5) - release.get(5)).max() > 0.5
