"""Decoding every supported format and the original preprocessing, checked numerically."""

from __future__ import annotations

from math import floor

import numpy as np
import pydicom
import pytest
from PIL import Image

from forgetmi.data.images import (area_downsample, crop_window, decode_image, load_image,
                                  pad_and_crop, preprocess_image, write_dicom)
from forgetmi.errors import DataError


def release_preprocess(pixels: np.ndarray, crop: int) -> np.ndarray:
    """The original pipeline written out literally: /max, np.pad, centre crop."""
    image = pixels.astype(np.float32)
    image = image / np.max(image)
    h, w = image.shape
    pad_h = floor(max(0, crop - h) / 2) + 4
    pad_w = floor(max(0, crop - w) / 2) + 4
    image = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)), "constant")
    top = floor((image.shape[0] - crop) / 2)
    left = floor((image.shape[1] - crop) / 2)
    return image[top:top + crop, left:left + crop]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ------------------------------------------------------------------------------------- decoding

def test_dicom_12bit_monochrome2_roundtrip(tmp_path, rng):
    pixels = rng.integers(0, 4096, (70, 50), dtype=np.uint16)
    pixels[3, 4] = 4095
    path = write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12)
    decoded = decode_image(path)
    assert decoded.dtype == np.uint16 and decoded.shape == (70, 50)
    np.testing.assert_array_equal(decoded, pixels)
    assert pydicom.dcmread(path).BitsStored == 12


def test_dicom_monochrome1_is_inverted(tmp_path, rng):
    pixels = rng.integers(0, 4096, (40, 30), dtype=np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    np.testing.assert_array_equal(decode_image(path), 4095 - pixels)
    # 16-bit MONOCHROME1 reflects within 0..65535
    pixels16 = rng.integers(0, 65536, (20, 20), dtype=np.uint16)
    path16 = write_dicom(tmp_path / "m1_16.dcm", pixels16, bits_stored=16, photometric="MONOCHROME1")
    np.testing.assert_array_equal(decode_image(path16), 65535 - pixels16)


def test_dicom_rescale_slope_intercept(tmp_path, rng):
    pixels = rng.integers(0, 4096, (16, 24), dtype=np.uint16)
    path = write_dicom(tmp_path / "r.dcm", pixels, rescale=(0.5, 10))
    decoded = decode_image(path)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, pixels * 0.5 + 10, rtol=0, atol=1e-3)


def test_dicom_without_file_meta_header(tmp_path, rng):
    pixels = rng.integers(0, 4096, (12, 9), dtype=np.uint16)
    ds = pydicom.dcmread(write_dicom(tmp_path / "full.dcm", pixels))
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(tmp_path / "bare.dcm", ds, implicit_vr=True, little_endian=True,
                     enforce_file_format=False)
    assert (tmp_path / "bare.dcm").read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(decode_image(tmp_path / "bare.dcm"), pixels)


def test_png_8_and_16_bit(tmp_path, rng):
    p8 = rng.integers(0, 256, (33, 21), dtype=np.uint8)
    Image.fromarray(p8).save(tmp_path / "a.png")
    decoded8 = decode_image(tmp_path / "a.png")
    assert decoded8.dtype == np.uint8
    np.testing.assert_array_equal(decoded8, p8)

    p16 = rng.integers(0, 65536, (33, 21), dtype=np.uint16)
    Image.fromarray(p16).save(tmp_path / "b.png")
    decoded16 = decode_image(tmp_path / "b.png")
    assert decoded16.max() > 255  # the 16-bit range survived
    np.testing.assert_array_equal(decoded16.astype(np.int64), p16.astype(np.int64))


def test_rgb_png_becomes_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: L = 299/1000 * 200 = 59.8 -> 60
    rgb[0, 0] = (10, 20, 30)  # L = (2990 + 11740 + 3420) / 1000 = 18.15 -> 18
    Image.fromarray(rgb).save(tmp_path / "c.png")
    decoded = decode_image(tmp_path / "c.png")
    assert decoded.shape == (4, 4)
    assert decoded[1, 1] == 60 and decoded[0, 0] == 18


def test_jpeg_grayscale(tmp_path, rng):
    smooth = (np.add.outer(np.arange(40), np.arange(30)) * 3).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "d.jpg", quality=100)
    decoded = decode_image(tmp_path / "d.jpg")
    assert decoded.shape == (40, 30)
    assert np.abs(decoded.astype(int) - smooth.astype(int)).max() <= 3  # lossy, but close


def test_npy(tmp_path, rng):
    pixels = rng.random((15, 17)).astype(np.float32) * 3000
    np.save(tmp_path / "e.npy", pixels)
    np.testing.assert_array_equal(decode_image(tmp_path / "e.npy"), pixels)


# --------------------------------------------------------------------------------- preprocessing

def test_scaled_by_image_max_even_outside_the_crop():
    image = np.full((40, 40), 100, dtype=np.uint16)
    image[0, 0] = 400  # the max lies outside a 16 px centre crop
    out = preprocess_image(image, 16)
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)
    image[20, 20] = 400  # now inside
    assert preprocess_image(image, 16).max() == 1.0


def test_large_image_crop_is_centred():
    image = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) + 1
    # padded 28 x 38; crop 8 starts at floor(20/2)=10 and floor(30/2)=15 -> source 6 and 11
    assert crop_window(20, 30, 8) == (6, 11)
    out = preprocess_image(image, 8)
    np.testing.assert_allclose(out, image[6:14, 11:19] / image.max(), rtol=1e-6)


def test_small_image_is_zero_padded_at_the_border():
    image = np.full((10, 6), 7, dtype=np.uint16)
    out = preprocess_image(image, 16)
    # rows: pad floor(6/2)+4 = 7 each side -> 24, crop starts at 4 -> image rows land at 3..12
    # cols: pad floor(10/2)+4 = 9 each side -> 24, crop starts at 4 -> image cols land at 5..10
    expected = np.zeros((16, 16), dtype=np.float32)
    expected[3:13, 5:11] = 1.0
    np.testing.assert_array_equal(out, expected)
    assert out[0].sum() == 0 and out[:, -1].sum() == 0


@pytest.mark.parametrize("shape,crop", [((37, 52), 32), ((31, 29), 40), ((64, 64), 64),
                                        ((9, 100), 24), ((101, 7), 33)])
def test_matches_the_release_pipeline(rng, shape, crop):
    image = rng.integers(1, 4096, shape, dtype=np.uint16)
    # bit-identical: same float32 division, same placement
    np.testing.assert_array_equal(preprocess_image(image, crop), release_preprocess(image, crop))


def test_all_zero_image_stays_zero():
    out = preprocess_image(np.zeros((20, 20), dtype=np.uint16), 16)
    assert np.isfinite(out).all() and out.max() == 0


def test_negative_values_are_shifted_to_zero():
    image = np.array([[-100.0, 0.0], [100.0, 300.0]], dtype=np.float32)
    out = preprocess_image(image, 2, pad=0)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])


def test_area_downsample_integer_factor_by_hand():
    image = np.array([[1, 2, 3, 4],
                      [5, 6, 7, 8],
                      [9, 10, 11, 12],
                      [13, 14, 15, 16]], dtype=np.float32)
    np.testing.assert_allclose(area_downsample(image, 2), [[3.5, 5.5], [11.5, 13.5]])


def test_area_downsample_fractional_factor_by_hand():
    x = np.arange(6, dtype=np.float32)
    image = np.tile(x, (6, 1))  # varies along columns only
    # 6 -> 4: each output covers 1.5 source pixels
    expected = [(0 + 0.5 * 1) / 1.5, (0.5 * 1 + 2) / 1.5, (3 + 0.5 * 4) / 1.5, (0.5 * 4 + 5) / 1.5]
    out = area_downsample(image, 4)
    np.testing.assert_allclose(out, np.tile(expected, (4, 1)), rtol=1e-6)
    # mean is preserved by area averaging
    big = np.random.default_rng(0).random((50, 50)).astype(np.float32)
    assert area_downsample(big, 20).mean() == pytest.approx(big.mean(), rel=1e-5)


def test_crop_then_downsample(rng):
    image = rng.integers(1, 4096, (70, 90), dtype=np.uint16)
    full = release_preprocess(image, 64)
    out = preprocess_image(image, 16, crop_size=64)
    expected = full.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_load_image_full_path(tmp_path, rng):
    pixels = rng.integers(0, 4096, (60, 44), dtype=np.uint16)
    path = write_dicom(tmp_path / "x.dcm", pixels)
    np.testing.assert_allclose(load_image(path, 48), release_preprocess(pixels, 48), rtol=1e-6)


def test_pad_and_crop_keeps_dtype():
    out = pad_and_crop(np.ones((3, 3), dtype=np.uint16), 5, pad=0)
    assert out.dtype == np.uint16 and out.sum() == 9


def test_image_size_above_crop_is_rejected():
    with pytest.raises(ValueError, match="must not exceed"):
        preprocess_image(np.ones((8, 8)), 16, crop_size=8)


# ---------------------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        decode_image(tmp_path / "nope.dcm")
    assert info.value.path == str(tmp_path / "nope.dcm")


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"II*\x00")
    with pytest.raises(DataError, match="unsupported image extension '.tif'"):
        decode_image(tmp_path / "a.tif")


def test_truncated_dicom(tmp_path, rng):
    path = write_dicom(tmp_path / "t.dcm", rng.integers(0, 4096, (200, 200), dtype=np.uint16))
    data = path.read_bytes()
    for keep in (len(data) // 2, 300):
        path.write_bytes(data[:keep])
        with pytest.raises(DataError) as info:
            decode_image(path)
        assert info.value.path == str(path)
        assert "DICOM" in str(info.value)


def test_garbage_dicom(tmp_path, rng):
    path = tmp_path / "g.dcm"
    for junk in (rng.bytes(4000), b"", b"\x00" * 132 + b"DICM" + rng.bytes(500)):
        path.write_bytes(junk)
        with pytest.raises(DataError) as info:
            decode_image(path)
        assert info.value.path == str(path)


def test_multiframe_dicom_is_not_2d(tmp_path, rng):
    path = write_dicom(tmp_path / "mf.dcm", rng.integers(0, 4096, (20, 10), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.Rows = 10
    ds.save_as(path)
    with pytest.raises(DataError, match=r"2-D.*\(2, 10, 10\)"):
        decode_image(path)


def test_truncated_and_corrupt_png(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    (tmp_path / "p.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="p.png"):
        decode_image(tmp_path / "p.png")
    (tmp_path / "q.png").write_bytes(rng.bytes(300))
    with pytest.raises(DataError, match="q.png"):
        decode_image(tmp_path / "q.png")


def test_bad_npy(tmp_path):
    np.save(tmp_path / "three.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="2-D"):
        decode_image(tmp_path / "three.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        decode_image(tmp_path / "obj.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="NaN") as info:
        load_image(tmp_path / "nan.npy", 2)
    assert info.value.path == str(tmp_path / "nan.npy")
