"""Draw a study's findings on the canonical chest (densities added to the background).

Edema follows the radiological grading the labels come from:

* 1, vascular congestion: enlarged hila, upper-lobe vessels (cephalisation), faint perihilar haze;
* 2, interstitial edema: more haze, Kerley B lines at the lateral bases, peribronchial cuffing,
  reticular texture;
* 3, alveolar edema: fluffy perihilar "bat-wing" opacities, usually with effusions blunting the
  costophrenic angles.

Each component ramps in smoothly with the study's continuous ``intensity``, so adjacent grades
overlap a little, as they do for radiologists. Everything is drawn with the *study's* random
generator: two images of one study show the same disease.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

from forgetmi.synthetic import anatomy, raster
from forgetmi.synthetic.findings import Mark, StudyFindings

MM = 1.0 / 400.0  # the canonical canvas is about 40 cm tall: one millimetre as a height fraction


def smoothstep(lo: float, hi: float, x: float) -> float:
    t = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise correlated over ``scale`` (a fraction of height).

    Made on a coarse grid and upsampled, so its cost does not grow with the canvas.
    """
    coarse_h = int(np.clip(np.ceil(4.0 / scale), 8, shape[0]))
    coarse_w = max(int(round(coarse_h * shape[1] / shape[0])), 2)
    field = ndimage.gaussian_filter(rng.standard_normal((coarse_h, coarse_w)), coarse_h * scale,
                                    mode="wrap")
    field /= field.std() + 1e-12
    zoomed = ndimage.zoom(field, (shape[0] / coarse_h, shape[1] / coarse_w), order=1)
    return zoomed[: shape[0], : shape[1]].astype(np.float32)


def _grid(shape: tuple[int, int]):
    rows = np.arange(shape[0], dtype=np.float32)[:, None] + 0.5
    cols = np.arange(shape[1], dtype=np.float32)[None, :] + 0.5
    return rows, cols


def perihilar(shape: tuple[int, int], sigma: float, stretch: float = 1.5) -> np.ndarray:
    """Gaussian envelope around both hila, wider across than down (a bat-wing shape)."""
    rows, cols = _grid(shape)
    h = shape[0]
    out = np.zeros(shape, np.float32)
    for hilum in anatomy.HILUM.values():
        r, c = anatomy.to_pixels(hilum, shape)
        across = (cols - c) / (sigma * h * stretch)
        env = np.exp(-0.5 * (((rows - r) / (sigma * h)) ** 2 + across ** 2))
        np.maximum(out, env, out=out)
    return out


def _lateral_edge(mask: np.ndarray, row: int, side: str) -> int | None:
    """Column of the lung's outer (rib-side) border on ``row``, or None outside the lung."""
    inside = np.flatnonzero(mask[min(max(row, 0), mask.shape[0] - 1)] > 0.5)
    if inside.size == 0:
        return None
    return int(inside[0] if side == "right" else inside[-1])


def draw_edema(canvas: np.ndarray, intensity: float, rng: np.random.Generator) -> None:
    shape = canvas.shape
    h = shape[0]
    masks = anatomy.lung_masks(h)
    lung = np.clip(masks["right"] + masks["left"], 0.0, 1.0)
    congestion = smoothstep(0.35, 1.2, intensity)
    interstitial = smoothstep(1.35, 2.2, intensity)
    alveolar = smoothstep(2.35, 3.2, intensity)
    if congestion == 0.0:
        return
    # Perihilar haze, textured so it is not a perfect Gaussian.
    haze_amp = 0.10 * congestion + 0.12 * interstitial + 0.14 * alveolar
    sigma = 0.08 + 0.03 * interstitial + 0.03 * alveolar
    texture = 1.0 + 0.35 * smooth_noise(rng, shape, 0.04)
    canvas += haze_amp * perihilar(shape, sigma) * texture * lung
    # Vascular congestion: plump hila and upper-zone vessels (cephalisation).
    for side, hilum in anatomy.HILUM.items():
        sign = -1.0 if side == "right" else 1.0
        r, c = anatomy.to_pixels(hilum, shape)
        raster.blob(canvas, (r, c), 0.028 * h, 0.020 * h, 0.14 * congestion)
        vessels = np.zeros(shape, np.float32)
        for _ in range(int(rng.integers(5, 9))):
            angle = rng.uniform(0.5, 1.45)  # mostly upwards
            length = rng.uniform(0.10, 0.20) * h
            end = (r - length * np.sin(angle), c + sign * length * np.cos(angle))
            branch = np.zeros(shape, np.float32)
            raster.segment(branch, (r, c), end, 0.0045 * h, 1.0, taper=0.35)
            np.maximum(vessels, branch, out=vessels)
        canvas += 0.10 * congestion * vessels * lung
    if interstitial == 0.0:
        return
    # Reticular interstitial texture, stronger at the bases.
    rows, _ = _grid(shape)
    base_weight = np.clip((rows / h - 0.35) / 0.35, 0.0, 1.0)
    reticular = smooth_noise(rng, shape, 0.008)
    canvas += 0.06 * interstitial * np.abs(reticular) * base_weight * lung
    for side in ("right", "left"):
        inward = 1.0 if side == "right" else -1.0
        mask = masks[side]
        # Kerley B lines: short horizontal lines running in from the lateral pleura.
        for _ in range(int(round(interstitial * rng.integers(8, 15)))):
            row = rng.uniform(0.50, 0.70) * h
            edge = _lateral_edge(mask, int(row), side)
            if edge is None:
                continue
            start = edge + inward * rng.uniform(0.002, 0.012) * h
            length = rng.uniform(0.012, 0.028) * h
            end = (row + rng.normal(0, 0.002) * h, start + inward * length)
            raster.segment(canvas, (row, start), end, 0.0012 * h, 0.20 * interstitial)
        # Peribronchial cuffing: thick-walled bronchi seen end-on near the hilum.
        r, c = anatomy.to_pixels(anatomy.HILUM[side], shape)
        for _ in range(int(rng.integers(3, 7))):
            centre = (r + rng.normal(0, 0.04) * h, c - inward * rng.uniform(0.0, 0.06) * h)
            radius = rng.uniform(0.005, 0.009) * h
            raster.disk(canvas, centre, radius, 0.15 * interstitial, edge=0.0015 * h,
                        inner=radius * 0.55)
    if alveolar == 0.0:
        return
    # Alveolar edema: fluffy confluent opacities in a bat-wing distribution.
    fluff = expit(3.0 * (smooth_noise(rng, shape, 0.025) + 0.4))
    wing = perihilar(shape, 0.15, stretch=1.7)
    canvas += 0.36 * alveolar * fluff * wing * lung


def draw_effusion(canvas: np.ndarray, side: str, size: float) -> None:
    """Fluid at the lung base with a meniscus rising laterally, blunting the costophrenic angle."""
    if size <= 0:
        return
    shape = canvas.shape
    h, w = shape
    rows, cols = _grid(shape)
    mask = anatomy.lung_masks(h)[side]
    cp_row = anatomy.COSTOPHRENIC[side][0] * h
    lateral = anatomy.COSTOPHRENIC[side][1] * w
    medial = anatomy.DOME[side][1] * w
    lateralness = np.clip((cols - medial) / (lateral - medial), 0.0, 1.0)
    # Meniscus: the fluid climbs the lateral chest wall, so its upper edge is concave.
    top = cp_row - (0.03 + 0.10 * size) * h - 0.06 * size * h * lateralness ** 2
    depth = np.clip((rows - top) / (0.08 * h), 0.0, 1.0)  # denser where the fluid is deeper
    fluid = expit((rows - top) / (0.015 * h)) * (0.45 + 0.55 * depth)
    canvas += (0.25 + 0.20 * size) * mask * fluid


def draw_cardiomegaly(canvas: np.ndarray, grade: int) -> None:
    """Enlarge the heart itself: magnify the canvas around the cardiac centre.

    Inside the silhouette the image is sampled closer to the centre (magnified by 1.12 or
    1.25); the magnification fades out by 1.6 heart radii, so nothing tears or folds.
    """
    if grade <= 0:
        return
    scale = 1.12 if grade == 1 else 1.25
    h, w = canvas.shape
    cr, cc = anatomy.to_pixels(anatomy.HEART_CENTER, canvas.shape)
    ar, ac = anatomy.HEART_AXES[0] * h, anatomy.HEART_AXES[1] * w
    reach = 1.7 * max(ar, ac)
    r0, r1 = max(int(cr - reach), 0), min(int(cr + reach) + 1, h)
    c0, c1 = max(int(cc - reach), 0), min(int(cc + reach) + 1, w)
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - cr
    cols = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5 - cc
    cos, sin = np.cos(anatomy.HEART_ANGLE), np.sin(anatomy.HEART_ANGLE)
    radius = np.hypot((rows * cos + cols * sin) / ar, (-rows * sin + cols * cos) / ac)
    t = np.clip((radius - 1.0) / 0.6, 0.0, 1.0)
    factor = 1.0 / scale + (1.0 - 1.0 / scale) * t * t * (3.0 - 2.0 * t)
    source = np.stack([np.broadcast_to(rows * factor + cr - 0.5, factor.shape),
                       np.broadcast_to(cols * factor + cc - 0.5, factor.shape)])
    canvas[r0:r1, c0:c1] = ndimage.map_coordinates(canvas, source, order=1, mode="nearest")


def draw_atelectasis(canvas: np.ndarray, side: str, rng: np.random.Generator) -> None:
    """Plate-like (discoid) atelectasis and a little basal volume loss."""
    h, w = canvas.shape
    c_lo, c_hi = anatomy.LUNG_COLUMNS[side]
    row = (anatomy.DOME[side][0] - rng.uniform(0.03, 0.08)) * h
    c0 = rng.uniform(c_lo + 0.03, (c_lo + c_hi) / 2) * w
    c1 = c0 + rng.uniform(0.06, 0.10) * w
    raster.segment(canvas, (row, c0), (row + rng.normal(0, 0.01) * h, c1), 0.004 * h, 0.18)
    raster.blob(canvas, (anatomy.DOME[side][0] * h - 0.02 * h, (c0 + c1) / 2),
                0.025 * h, 0.05 * h, 0.08)


def draw_pneumothorax(canvas: np.ndarray, side: str) -> None:
    """A small apical pneumothorax: a thin visceral pleural line with no lung markings beyond it."""
    h = canvas.shape[0]
    mask = anatomy.lung_masks(h)[side]
    inward = 1.0 if side == "right" else -1.0
    points = []
    for frac in np.linspace(0.13, 0.34, 8):
        edge = _lateral_edge(mask, int(frac * h), side)
        if edge is not None:
            points.append((frac * h, edge + inward * 0.03 * h))
    if len(points) < 2:
        return
    pts = np.asarray(points)
    centre = (pts[:, 0].mean(), pts[:, 1].mean() - inward * 0.015 * h)
    dark = np.zeros_like(canvas)
    raster.blob(dark, centre, 0.09 * h, 0.02 * h, 1.0)
    canvas -= 0.08 * dark * mask
    raster.polyline(canvas, pts, 0.0012 * h, 0.10)


def draw_granuloma(canvas: np.ndarray, granuloma) -> None:
    h, w = canvas.shape
    z0, z1 = anatomy.ZONES[granuloma.zone]
    c0, c1 = anatomy.LUNG_COLUMNS[granuloma.side]
    row = (z0 + (z1 - z0) * granuloma.offset) * h
    col = (c0 + (c1 - c0) * (0.25 + 0.5 * granuloma.offset)) * w
    raster.disk(canvas, (row, col), 0.5 * granuloma.size_mm * MM * h, 0.45, edge=0.4 * MM * h)


def draw_mark(canvas: np.ndarray, mark: Mark) -> None:
    """A patient's own small radio-opaque mark, in the anatomy's frame so that it follows the
    patient's body from study to study, as the granuloma does."""
    h, w = canvas.shape
    z0, z1 = anatomy.ZONES[mark.zone]
    c0, c1 = anatomy.LUNG_COLUMNS[mark.side]
    centre = ((z0 + (z1 - z0) * mark.row) * h, (c0 + (c1 - c0) * mark.col) * w)
    half = 0.5 * mark.size_mm * MM * h
    edge = 0.4 * MM * h
    if mark.shape == "ring":
        raster.disk(canvas, centre, half, 0.6, edge=edge, inner=0.5 * half)
        return
    angles = (mark.angle,) if mark.shape == "bar" else (mark.angle, mark.angle + np.pi / 2)
    for angle in angles:
        raster.rectangle(canvas, centre, half, 0.3 * half, 0.6, angle=angle, edge=edge)


def _curve(points, rng: np.random.Generator, shape, jitter: float = 0.006,
           n: int = 40) -> np.ndarray:
    """A smooth path through landmark fractions, jittered per study, in pixels."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts + rng.normal(0.0, jitter, pts.shape)
    t = np.linspace(0.0, 1.0, len(pts))
    fine = np.linspace(0.0, 1.0, n)
    rows = np.interp(fine, t, pts[:, 0])
    cols = np.interp(fine, t, pts[:, 1])
    # A light smoothing of the polyline keeps bends from looking kinked.
    rows = ndimage.gaussian_filter1d(rows, 1.5, mode="nearest")
    cols = ndimage.gaussian_filter1d(cols, 1.5, mode="nearest")
    return np.c_[rows * shape[0], cols * shape[1]]


CENTRAL_LINES = {
    "right ij": [(0.0, 0.40), (0.15, 0.41), (0.35, 0.43), (0.47, 0.43)],
    "left ij": [(0.0, 0.60), (0.15, 0.60), (0.25, 0.55), (0.33, 0.47), (0.47, 0.43)],
    "right picc": [(0.28, 0.0), (0.27, 0.10), (0.22, 0.22), (0.25, 0.36), (0.49, 0.43)],
    "left picc": [(0.28, 1.0), (0.26, 0.90), (0.21, 0.76), (0.25, 0.60), (0.33, 0.47),
                  (0.49, 0.43)],
}


def draw_devices(canvas: np.ndarray, f: StudyFindings, rng: np.random.Generator) -> None:
    h, w = canvas.shape
    if f.et_tube_cm is not None:
        tip = anatomy.CARINA[0] - f.et_tube_cm * 10 * MM
        for offset in (-0.0035, 0.0035):  # the two radio-opaque walls of the tube
            col = (anatomy.TRACHEA_TOP[1] + offset * h / w) * w
            raster.segment(canvas, (0.0, col), (tip * h, col + 0.002 * w), 0.0015 * h, 0.25)
    if f.ng_tube:
        path = [(0.0, 0.50), (0.30, 0.51), (0.55, 0.53), (0.74, 0.60), (0.84, 0.66)]
        raster.polyline(canvas, _curve(path, rng, canvas.shape), 0.0022 * h, 0.30)
    if f.central_line is not None:
        raster.polyline(canvas, _curve(CENTRAL_LINES[f.central_line], rng, canvas.shape),
                        0.0018 * h, 0.30)
    if f.pacemaker:
        gen = (0.17 * h, 0.80 * w)
        raster.rectangle(canvas, gen, 0.022 * h, 0.032 * h, 0.8, angle=0.3, edge=0.002 * h)
        for end in ((0.52, 0.45), (0.67, 0.58)):  # right atrial and right ventricular leads
            path = [(0.17, 0.80), (0.22, 0.70), (0.30, 0.52), (0.45, 0.44), end]
            raster.polyline(canvas, _curve(path, rng, canvas.shape, 0.004), 0.0018 * h, 0.45)
    if f.sternotomy:
        for row in np.linspace(0.22, 0.55, 6) + rng.normal(0, 0.008, 6):
            centre = (row * h, (0.49 + rng.normal(0, 0.004)) * w)
            raster.disk(canvas, centre, 0.008 * h, 0.7, edge=0.001 * h, inner=0.004 * h)


def draw_study(canvas: np.ndarray, f: StudyFindings, rng: np.random.Generator) -> None:
    """Draw all of a study's findings, in place, on a copy of the canonical chest."""
    draw_cardiomegaly(canvas, f.cardiomegaly)
    draw_edema(canvas, f.intensity, rng)
    for side, size in zip(("right", "left"), f.effusion):
        draw_effusion(canvas, side, size)
    for side in f.atelectasis:
        draw_atelectasis(canvas, side, rng)
    if f.pneumothorax is not None:
        draw_pneumothorax(canvas, f.pneumothorax)
    if f.granuloma is not None:
        draw_granuloma(canvas, f.granuloma)
    if f.detail is not None:
        draw_mark(canvas, f.detail.mark)
    draw_devices(canvas, f, rng)
