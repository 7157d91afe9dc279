"""The canonical chest every synthetic radiograph starts from.

A *canonical canvas* is the chest in its own frame, before any per-patient warp: ``height`` rows
and ``round(height * ASPECT)`` columns. Positions are written as fractions of the canvas
(row fraction, column fraction). The background is either the real PA radiograph shipped by
``pydicom-data`` (``RG1_UNCI.dcm``), or, when that package is missing, a procedural drawing of
the same anatomy. The landmark geometry below was traced on that radiograph, so findings land
in the right place on either background.

Values are *densities* in [0, 1]: 1 is bone/soft-tissue white, 0 is air black (MONOCHROME2).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from scipy import ndimage
from scipy.special import expit

from forgetmi.synthetic import raster

logger = logging.getLogger("forgetmi.synthetic")

TEMPLATE_FILE = "RG1_UNCI.dcm"
TEMPLATE_SHAPE = (1955, 1841)
ASPECT = TEMPLATE_SHAPE[1] / TEMPLATE_SHAPE[0]  # canvas columns per row
# Raw-value window that gives the template a clinical look once inverted (it is MONOCHROME1).
TEMPLATE_WINDOW = (2000.0, 21000.0)

# Landmarks as (row fraction, column fraction). "Right" is the patient's right, which is the
# image's left on a PA film.
RIGHT_LUNG = [(0.10, 0.26), (0.12, 0.19), (0.18, 0.14), (0.30, 0.11), (0.45, 0.10), (0.60, 0.10),
              (0.70, 0.11), (0.755, 0.115), (0.72, 0.17), (0.695, 0.24), (0.69, 0.31),
              (0.665, 0.37), (0.58, 0.395), (0.46, 0.40), (0.32, 0.41), (0.18, 0.41), (0.12, 0.36)]
LEFT_LUNG = [(0.10, 0.67), (0.12, 0.74), (0.18, 0.80), (0.30, 0.86), (0.45, 0.89), (0.60, 0.90),
             (0.72, 0.905), (0.80, 0.90), (0.78, 0.85), (0.765, 0.79), (0.73, 0.75), (0.64, 0.69),
             (0.54, 0.62), (0.44, 0.585), (0.32, 0.575), (0.18, 0.58), (0.12, 0.62)]
HILUM = {"right": (0.43, 0.35), "left": (0.41, 0.625)}
# Lateral costophrenic angles and the highest point of each hemidiaphragm.
COSTOPHRENIC = {"right": (0.745, 0.12), "left": (0.79, 0.895)}
DOME = {"right": (0.69, 0.27), "left": (0.765, 0.78)}
HEART_CENTER = (0.63, 0.575)
HEART_AXES = (0.13, 0.19)         # semi-axes (rows, columns) of the cardiac silhouette
HEART_ANGLE = -0.35               # radians: the apex points down and to the patient's left
CARINA = (0.30, 0.49)
TRACHEA_TOP = (0.02, 0.495)
SVC_CAVOATRIAL = (0.50, 0.43)
# Zones of each lung for findings named in reports, as row fractions (upper/mid/lower).
ZONES = {"upper": (0.16, 0.32), "mid": (0.33, 0.52), "lower": (0.53, 0.70)}
LUNG_COLUMNS = {"right": (0.13, 0.38), "left": (0.61, 0.87)}


def canvas_shape(height: int) -> tuple[int, int]:
    """Rows and columns of the canonical canvas for a given height."""
    return int(height), max(int(round(height * ASPECT)), 1)


@functools.lru_cache(maxsize=1)
def _template_density() -> np.ndarray | None:
    """The packaged radiograph as densities in [0, 1] at full resolution, or None if absent."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        path = get_testdata_file(TEMPLATE_FILE)
        if path is None:
            raise FileNotFoundError(TEMPLATE_FILE)
        dataset = pydicom.dcmread(path)
        raw = dataset.pixel_array.astype(np.float32)
    except Exception as err:  # any failure means: draw the chest instead
        logger.warning("template radiograph unavailable (%s: %s); using the procedural chest",
                       type(err).__name__, err)
        return None
    lo, hi = TEMPLATE_WINDOW
    density = np.clip((raw - lo) / (hi - lo), 0.0, 1.0)
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        density = 1.0 - density
    return density.astype(np.float32)


def template_available() -> bool:
    return _template_density() is not None


def _resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize with a Gaussian pre-filter when shrinking, so that fine structure does not alias."""
    factor = (image.shape[0] / shape[0], image.shape[1] / shape[1])
    sigma = [max((f - 1.0) / 2.0, 0.0) for f in factor]
    if max(sigma) > 0:
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    rows = (np.arange(shape[0], dtype=np.float32) + 0.5) * factor[0] - 0.5
    cols = (np.arange(shape[1], dtype=np.float32) + 0.5) * factor[1] - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(image, grid, order=1, mode="nearest").astype(np.float32)


@functools.lru_cache(maxsize=4)
def background(height: int, source: str = "auto") -> np.ndarray:
    """The canonical chest at ``height`` rows: ``source`` is "template", "procedural" or "auto".

    Cached and returned read-only: callers copy before drawing on it.
    """
    shape = canvas_shape(height)
    density = _template_density() if source in ("auto", "template") else None
    if source == "template" and density is None:
        raise FileNotFoundError(f"{TEMPLATE_FILE} from pydicom-data is not installed")
    image = _resample(density, shape) if density is not None else procedural_chest(shape)
    image.setflags(write=False)
    return image


@functools.lru_cache(maxsize=4)
def lung_masks(height: int) -> dict[str, np.ndarray]:
    """Soft masks (0..1) of each lung on the canonical canvas, cached and read-only."""
    shape = canvas_shape(height)
    # Rasterise at a modest resolution and upsample: the masks only need to be smooth.
    coarse_h = min(height, 256)
    coarse = canvas_shape(coarse_h)
    masks = {}
    for side, poly in (("right", RIGHT_LUNG), ("left", LEFT_LUNG)):
        mask = raster.polygon_mask(coarse, poly, coarse[0], coarse[1]).astype(np.float32)
        mask = ndimage.gaussian_filter(mask, 0.006 * coarse_h * 2, mode="constant")
        mask = _resample(mask, shape) if coarse != shape else mask
        mask.setflags(write=False)
        masks[side] = mask
    return masks


def heart_mask(shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """Soft ellipse of the cardiac silhouette, optionally enlarged (cardiomegaly)."""
    h, w = shape
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    dr = (rows - HEART_CENTER[0]) * h
    dc = (cols - HEART_CENTER[1]) * w
    cos, sin = np.cos(HEART_ANGLE), np.sin(HEART_ANGLE)
    u = (dr * cos + dc * sin) / (HEART_AXES[0] * h * scale)
    v = (-dr * sin + dc * cos) / (HEART_AXES[1] * w * scale)
    radius = np.sqrt(u * u + v * v)
    return expit((1.0 - radius) / 0.04).astype(np.float32)


def procedural_chest(shape: tuple[int, int]) -> np.ndarray:
    """A drawn PA chest (body, lungs, vessels, mediastinum, heart, ribs, clavicles, diaphragm)."""
    h, w = shape
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    # Soft-tissue body: bright, fading at the flanks and above the shoulders.
    body = np.exp(-((cols - 0.5) / 0.47) ** 8) * expit((rows - 0.05) / 0.02)
    image = 0.12 + 0.62 * body
    lungs = lung_masks(h)
    lung = np.clip(lungs["right"] + lungs["left"], 0.0, 1.0)
    # Lungs are dark, darker towards the apices and periphery (less tissue in the beam).
    lung_depth = 0.22 + 0.16 * rows - 0.05 * np.abs(cols - 0.5)
    image = image * (1.0 - lung) + lung_depth * lung
    image += 0.20 * heart_mask(shape) * (1.0 - 0.3 * lung)
    # Spine and mediastinum: a bright vertical band.
    image += 0.22 * np.exp(-((cols - 0.49) / 0.06) ** 2) * (1.0 - 0.7 * lung)
    # Below the domes: liver and stomach.
    for side, (r_cp, c_cp) in COSTOPHRENIC.items():
        r_dome, c_dome = DOME[side]
        half = (cols <= 0.49) if side == "right" else (cols > 0.49)
        dome = r_dome + (r_cp - r_dome) * ((cols - c_dome) / (c_cp - c_dome)) ** 2
        image += 0.35 * half * expit((rows - dome) / 0.01) * (1.0 - lung)
    bones = np.zeros(shape, np.float32)
    # Posterior ribs: arcs from the spine sweeping laterally and downwards, ten per side.
    t = np.linspace(0.0, 1.0, 12)
    for k in range(10):
        r0 = 0.11 + 0.058 * k
        for sign in (-1.0, 1.0):
            c = 0.49 + sign * (0.03 + 0.38 * t)
            r = r0 - 0.06 * np.sin(np.pi * t * 0.8) + 0.08 * t ** 2
            raster.polyline(bones, np.c_[r * h, c * w], 0.006 * h, 0.10)
    for sign in (-1.0, 1.0):  # clavicles
        tc = np.linspace(0.0, 1.0, 8)
        clavicle = np.c_[(0.14 - 0.05 * tc) * h, (0.49 + sign * (0.05 + 0.33 * tc)) * w]
        raster.polyline(bones, clavicle, 0.010 * h, 0.2)
    # Pulmonary vessels: tapered branches fanning out of each hilum.
    vessels = np.zeros(shape, np.float32)
    for side, hilum in HILUM.items():
        sign = -1.0 if side == "right" else 1.0
        for angle in np.linspace(-1.2, 1.3, 9):
            length = 0.16 + 0.05 * np.cos(3 * angle)
            end = (hilum[0] - length * np.sin(angle),
                   hilum[1] + sign * length * np.cos(angle) / ASPECT)
            branch = np.zeros(shape, np.float32)
            raster.segment(branch, to_pixels(hilum, shape), to_pixels(end, shape),
                           0.004 * h, 0.10, taper=0.3)
            np.maximum(vessels, branch, out=vessels)  # no bright star where branches meet
    image += bones * (0.5 + 0.5 * lung) + vessels * lung
    return np.clip(ndimage.gaussian_filter(image, 0.002 * h), 0.0, 1.0).astype(np.float32)


def to_pixels(point, shape: tuple[int, int]) -> tuple[float, float]:
    """A (row fraction, column fraction) landmark in pixel units of ``shape``."""
    return point[0] * shape[0], point[1] * shape[1]
