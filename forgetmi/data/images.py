"""Decode one chest X-ray and apply the original preprocessing (SPEC §2).

Decoding (:func:`decode_image`) turns a DICOM, PNG/JPEG or NPY file into a 2-D array in display
orientation (MONOCHROME1 inverted, DICOM rescale applied). Preprocessing
(:func:`preprocess_image`) reproduces the original pipeline: divide by the image max, zero-pad
4 px on each side (more when the image is smaller than the crop), centre-crop, then optionally
area-downsample to the model's input size. :func:`load_image` does both and is what the image
cache calls once per file.

Two modes (``data.preprocessing``): ``forgetmi`` decodes to display orientation as above and
shifts signed or rescaled data so its darkest pixel is 0; ``release`` feeds exactly what the
public release's models were trained on: the stored ``pixel_array`` divided by its max (no
MONOCHROME1 inversion, no rescale, no shift), then the same padding and crop. A published model
must see the mode it learned on.

Every failure on a file raises :class:`~forgetmi.errors.DataError` naming that file.
"""

from __future__ import annotations

import logging
import os
import warnings
from math import floor
from pathlib import Path

import numpy as np

from forgetmi.errors import DataError

logger = logging.getLogger("forgetmi.data.images")

DICOM_EXTENSIONS = (".dcm", ".dicom")
RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARRAY_EXTENSIONS = (".npy",)
SUPPORTED_EXTENSIONS = DICOM_EXTENSIONS + RASTER_EXTENSIONS + ARRAY_EXTENSIONS
PAD = 4  # the original pads every side by 4 px before cropping
PREPROCESSING_MODES = ("forgetmi", "release")


def check_mode(mode: str) -> str:
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"unknown image preprocessing {mode!r}; choose between "
                         f"{', '.join(PREPROCESSING_MODES)}")
    return mode


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# --------------------------------------------------------------------------------------- decoding

def decode_image(path: str | os.PathLike, mode: str = "forgetmi") -> np.ndarray:
    """Read one image file into a 2-D numeric array (no scaling, no cropping).

    DICOM: MONOCHROME1 is inverted so that bright means dense for every file; RescaleSlope and
    RescaleIntercept are applied when present (result float32), otherwise the stored integer
    dtype is kept; in ``release`` mode the stored values are returned as they are. PNG/JPEG:
    8- or 16-bit grayscale as stored; colour images are converted to luma. NPY: loaded without
    pickle; must be 2-D and real-valued.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(f"unsupported image extension {path.suffix!r}; expected one of "
                        f"{', '.join(SUPPORTED_EXTENSIONS)}", path)
    if not path.is_file():
        raise DataError("image file not found", path)
    if suffix in DICOM_EXTENSIONS:
        pixels = _decode_dicom(path, display=check_mode(mode) == "forgetmi")
    elif suffix in RASTER_EXTENSIONS:
        pixels = _decode_raster(path)
    else:
        pixels = _decode_npy(path)
    if pixels.ndim != 2:
        raise DataError(f"expected 2-D grayscale pixel data, got shape {tuple(pixels.shape)}", path)
    if 0 in pixels.shape:
        raise DataError(f"image is empty (shape {tuple(pixels.shape)})", path)
    return pixels


def _decode_dicom(path: Path, display: bool = True) -> np.ndarray:
    import pydicom  # imported here so that workers which never see a DICOM stay light

    try:
        with warnings.catch_warnings():
            # Malformed headers make pydicom warn per element; the failure below says it once.
            warnings.simplefilter("ignore")
            # force=True accepts files without the 128-byte preamble (older exports); garbage
            # then shows up as a dataset without pixel data, reported below.
            ds = pydicom.dcmread(path, force=True)
            if "PixelData" not in ds:
                raise DataError("not a readable DICOM image: no pixel data element "
                                "(corrupt, truncated, or not a DICOM file)", path)
            if "TransferSyntaxUID" not in ds.file_meta:
                # Files without a meta header: use the encoding pydicom detected while reading.
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (
                    pydicom.uid.ImplicitVRLittleEndian if implicit else
                    pydicom.uid.ExplicitVRLittleEndian if little else
                    pydicom.uid.ExplicitVRBigEndian)
            pixels = ds.pixel_array
    except DataError:
        raise
    except Exception as err:  # pydicom raises many types for broken files; all mean "unreadable"
        raise DataError(f"cannot decode DICOM pixel data ({_first_line(err)})", path) from None
    if not display:  # the release's models learned on the stored values themselves
        return pixels

    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        pixels = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)

    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        # MONOCHROME1 shows low values white. Reflect within the representable range (in
        # rescaled units) so the result reads like MONOCHROME2.
        bits = int(ds.get("BitsStored", pixels.dtype.itemsize * 8))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        low, high = low * slope + intercept, high * slope + intercept
        if np.issubdtype(pixels.dtype, np.integer):
            # Out-of-range values (beyond BitsStored) would wrap around; clip them to the range.
            low, high = int(low), int(high)
            inverted = np.int64(low + high) - pixels.astype(np.int64)
            pixels = np.clip(inverted, low, high).astype(np.int32 if signed else pixels.dtype)
        else:
            pixels = np.float32(low + high) - pixels
    return pixels


def _decode_raster(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "I;16", "I;16L", "I;16B", "I", "F"):
                pixels = np.asarray(image)
            else:  # colour, palette, 1-bit, with alpha: reduce to 8-bit luma
                pixels = np.asarray(image.convert("L"))
    except UnidentifiedImageError:
        raise DataError("not a readable PNG/JPEG image (unrecognised or corrupt data)", path) from None
    except (OSError, ValueError, SyntaxError) as err:  # Pillow's truncated / broken stream errors
        raise DataError(f"cannot decode image ({_first_line(err)})", path) from None
    if pixels.dtype.byteorder == ">":
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def _decode_npy(path: Path) -> np.ndarray:
    try:
        pixels = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"cannot read NPY array ({_first_line(err)})", path) from None
    if not isinstance(pixels, np.ndarray):
        raise DataError("expected a single array, got an archive of several", path)
    if pixels.dtype.kind not in "biuf":
        raise DataError(f"expected a real numeric array, got dtype {pixels.dtype}", path)
    return pixels


# ---------------------------------------------------------------------------------- preprocessing

def crop_window(height: int, width: int, crop_size: int, pad: int = PAD) -> tuple[int, int]:
    """Top-left corner, in source coordinates, of the original's padded centre crop.

    The original pads ``floor(max(0, crop - side) / 2) + pad`` zeros on both ends of each axis
    and then takes ``floor((padded - crop) / 2)`` as the crop start. A negative result means the
    crop starts in the padding.
    """
    def start(side: int) -> int:
        before = floor(max(0, crop_size - side) / 2) + pad
        padded = side + 2 * before
        return floor((padded - crop_size) / 2) - before

    return start(height), start(width)


def pad_and_crop(image: np.ndarray, crop_size: int, pad: int = PAD) -> np.ndarray:
    """Zero-pad and centre-crop to ``crop_size`` x ``crop_size`` without building the padded copy."""
    height, width = image.shape
    top, left = crop_window(height, width, crop_size, pad)
    out = np.zeros((crop_size, crop_size), dtype=image.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + crop_size, height), min(left + crop_size, width)
    if src_bottom > src_top and src_right > src_left:
        out[src_top - top:src_bottom - top, src_left - left:src_right - left] = \
            image[src_top:src_bottom, src_left:src_right]
    return out


def area_weights(side: int, size: int) -> np.ndarray:
    """(size, side) matrix: row i holds the share of each source pixel in output pixel i.

    Output pixel i covers the source interval [i * side/size, (i+1) * side/size); a source
    pixel partly inside it counts with the covered fraction, so rows sum to 1.
    """
    edges = np.arange(size + 1, dtype=np.float64) * (side / size)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixel = np.arange(side, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(pixel + 1, ends) - np.maximum(pixel, starts), 0.0, None)
    return overlap / (side / size)


def area_downsample(image: np.ndarray, size: int) -> np.ndarray:
    """Average a square float image down to ``size`` x ``size`` (each output = mean of its area).

    Integer factors use a block mean; other ratios weigh partly covered source pixels by the
    covered fraction (separable, two matrix products). Unlike adaptive pooling, no source pixel
    counts twice.
    """
    side = image.shape[0]
    if image.shape != (side, side):
        raise ValueError(f"expected a square image, got shape {image.shape}")
    if size == side:
        return image
    if size > side:
        raise ValueError(f"cannot area-downsample {side} px to a larger {size} px")
    if side % size == 0:
        factor = side // size
        # Sum the rows of each block, then the columns: two contiguous reductions.
        rows = image.reshape(size, factor, side).sum(axis=1, dtype=np.float64)
        blocks = rows.reshape(size, size, factor).sum(axis=2)
        return (blocks / (factor * factor)).astype(np.float32)
    weights = area_weights(side, size)
    return (weights @ image.astype(np.float64) @ weights.T).astype(np.float32)


def preprocess_image(pixels: np.ndarray, image_size: int, crop_size: int | None = None,
                     pad: int = PAD, mode: str = "forgetmi") -> np.ndarray:
    """The original preprocessing: scale by max, pad, centre-crop, then area-downsample.

    ``crop_size`` defaults to ``image_size`` (small files, no resize). The paper crops 2048 px;
    full-size files at a smaller model resolution set ``crop_size=2048`` and get the same field
    of view, averaged down. Returns float32 (image_size, image_size) in [0, 1]. ``release``
    mode divides by the max without first shifting negative data (which it refuses: the
    release's own data was unsigned).
    """
    crop_size = image_size if crop_size is None else crop_size
    if image_size < 1 or crop_size < 1:
        raise ValueError(f"image_size and crop_size must be positive, got {image_size}, {crop_size}")
    if image_size > crop_size:
        raise ValueError(f"image_size ({image_size}) must not exceed crop_size ({crop_size})")
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ValueError("image contains NaN or infinite values")
    low = pixels.min()
    if low < 0 and check_mode(mode) == "release":
        raise ValueError(f"release preprocessing expects non-negative stored pixels, found "
                         f"{float(low):g}; use data.preprocessing=forgetmi for signed data")
    if low < 0:
        # Signed or rescaled data: shift so the darkest pixel is 0 like the zero padding.
        # Non-negative images, which is what chest X-rays store, match the original exactly.
        pixels = pixels.astype(np.float32) - np.float32(low)
    peak = float(pixels.max())
    # Scaling is per-pixel and padding adds zeros, so cropping first gives the same result
    # while converting only the crop; the max still comes from the whole image.
    cropped = pad_and_crop(pixels, crop_size, pad).astype(np.float32, copy=False)
    if peak > 0:  # an all-zero image stays zero instead of becoming NaN
        cropped /= np.float32(peak)  # float32 division, as the original: the max maps to 1.0
    return area_downsample(cropped, image_size)


def load_image(path: str | os.PathLike, image_size: int, crop_size: int | None = None,
               mode: str = "forgetmi") -> np.ndarray:
    """Decode and preprocess one file in ``mode`` (forgetmi | release); float32
    (image_size, image_size) in [0, 1]."""
    pixels = decode_image(path, mode)
    try:
        return preprocess_image(pixels, image_size, crop_size, mode=mode)
    except ValueError as err:
        raise DataError(str(err), path) from None


# ----------------------------------------------------------------------------------------- writing

def write_dicom(path: str | os.PathLike, pixels: np.ndarray, bits_stored: int = 12,
                photometric: str = "MONOCHROME2", rescale: tuple[float, float] | None = None) -> Path:
    """Write a 2-D unsigned integer array as a minimal uncompressed DICOM (CR, explicit VR LE).

    The counterpart of :func:`decode_image` for tests, benchmarks and exports. Values must fit
    in ``bits_stored`` bits. ``rescale`` = (slope, intercept) writes the Modality LUT tags.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype.kind not in "iu":
        raise ValueError(f"expected a 2-D integer array, got {pixels.dtype} {pixels.shape}")
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be 1-16, got {bits_stored}")
    if pixels.size and (pixels.min() < 0 or pixels.max() >= 2 ** bits_stored):
        raise ValueError(f"pixel values must lie in [0, {2 ** bits_stored - 1}]")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{float(v):g}" for v in rescale)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
