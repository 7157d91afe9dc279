"""Anti-aliased drawing primitives on float canvases, in pixel coordinates (row, column).

Every primitive touches only the bounding box of what it draws, so a full-size (2,500 px)
canvas costs no more per stroke than a small one. Profiles are Gaussian, with a floor of
half a pixel, so thin structures fade rather than alias when the canvas is small.
"""

from __future__ import annotations

import numpy as np

MIN_SIGMA = 0.5  # px: below this a stroke would alias into isolated dots


def _window(shape: tuple[int, int], lo_r: float, hi_r: float, lo_c: float, hi_c: float):
    """Integer pixel window clipped to the canvas, or None when it is empty."""
    r0, r1 = max(int(np.floor(lo_r)), 0), min(int(np.ceil(hi_r)) + 1, shape[0])
    c0, c1 = max(int(np.floor(lo_c)), 0), min(int(np.ceil(hi_c)) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    cols = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    return (slice(r0, r1), slice(c0, c1)), rows, cols


def _stroke_amplitude(amp: float, sigma: float) -> tuple[float, float]:
    """Keep the integrated density of a stroke when its width is floored to ``MIN_SIGMA``."""
    if sigma >= MIN_SIGMA:
        return amp, sigma
    return amp * sigma / MIN_SIGMA, MIN_SIGMA


def segment(canvas: np.ndarray, p0, p1, width: float, amp: float, taper: float = 1.0) -> None:
    """Add a straight stroke from ``p0`` to ``p1`` (row, col) with Gaussian cross-section.

    ``width`` is the profile's sigma at ``p0``; it shrinks linearly to ``width * taper`` at ``p1``
    (vessels narrow towards the periphery).
    """
    amp, sigma = _stroke_amplitude(amp, width)
    sigma_end = max(sigma * taper, MIN_SIGMA)
    reach = 3.0 * max(sigma, sigma_end)
    (r0, c0), (r1, c1) = p0, p1
    win = _window(canvas.shape, min(r0, r1) - reach, max(r0, r1) + reach,
                  min(c0, c1) - reach, max(c0, c1) + reach)
    if win is None:
        return
    box, rows, cols = win
    dr, dc = r1 - r0, c1 - c0
    length2 = dr * dr + dc * dc
    if length2 < 1e-9:
        t = np.zeros((rows.size, cols.size), dtype=np.float32)
    else:
        t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / length2, 0.0, 1.0)
    dist2 = (rows - (r0 + t * dr)) ** 2 + (cols - (c0 + t * dc)) ** 2
    s = sigma + (sigma_end - sigma) * t
    canvas[box] += (amp * np.exp(-0.5 * dist2 / (s * s))).astype(canvas.dtype)


def polyline(canvas: np.ndarray, points, width: float, amp: float, taper: float = 1.0) -> None:
    """A chain of strokes through ``points`` (N x 2, row/col), tapering along its length.

    Consecutive strokes share their end points, so overlapping Gaussian caps would double the
    density at every joint; drawing on a scratch canvas with ``max`` avoids that.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 2:
        return
    reach = 3.0 * max(width, MIN_SIGMA)
    lo = points.min(axis=0) - reach
    hi = points.max(axis=0) + reach
    win = _window(canvas.shape, lo[0], hi[0], lo[1], hi[1])
    if win is None:
        return
    box, _, _ = win
    scratch = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)
    offset = np.array([box[0].start, box[1].start], dtype=np.float64)
    n = len(points) - 1
    for k in range(n):
        w0 = width * (1.0 + (taper - 1.0) * k / n)
        w1 = width * (1.0 + (taper - 1.0) * (k + 1) / n)
        piece = np.zeros_like(scratch)
        segment(piece, points[k] - offset, points[k + 1] - offset, w0, 1.0, w1 / max(w0, 1e-6))
        np.maximum(scratch, piece, out=scratch)
    canvas[box] += (amp * scratch).astype(canvas.dtype)


def _rotated(dr, dc, angle: float):
    """Offsets (dr, dc) in a frame rotated by ``angle`` radians."""
    cos, sin = np.cos(angle), np.sin(angle)
    return dr * cos + dc * sin, -dr * sin + dc * cos


def blob(canvas: np.ndarray, center, sigma_r: float, sigma_c: float, amp: float,
         angle: float = 0.0) -> None:
    """Add an (optionally rotated) anisotropic Gaussian blob."""
    sigma_r, sigma_c = max(sigma_r, MIN_SIGMA), max(sigma_c, MIN_SIGMA)
    reach = 3.0 * max(sigma_r, sigma_c)
    r, c = center
    win = _window(canvas.shape, r - reach, r + reach, c - reach, c + reach)
    if win is None:
        return
    box, rows, cols = win
    u, v = _rotated(rows - r, cols - c, angle)
    shape = np.exp(-0.5 * ((u / sigma_r) ** 2 + (v / sigma_c) ** 2))
    canvas[box] += (amp * shape).astype(canvas.dtype)


def disk(canvas: np.ndarray, center, radius: float, amp: float, edge: float = 0.7,
         inner: float = 0.0) -> None:
    """Add a disk (or a ring when ``inner`` > 0) with a soft edge of ``edge`` px."""
    edge = max(edge, MIN_SIGMA)
    r, c = center
    reach = radius + 3 * edge
    win = _window(canvas.shape, r - reach, r + reach, c - reach, c + reach)
    if win is None:
        return
    box, rows, cols = win
    dist = np.sqrt((rows - r) ** 2 + (cols - c) ** 2)
    shape = 1.0 / (1.0 + np.exp((dist - radius) / edge))
    if inner > 0:
        shape = shape * (1.0 / (1.0 + np.exp((inner - dist) / edge)))
    canvas[box] += (amp * shape).astype(canvas.dtype)


def rectangle(canvas: np.ndarray, center, half_r: float, half_c: float, amp: float,
              angle: float = 0.0, edge: float = 0.6) -> None:
    """Add a rotated rectangle with soft edges (devices, markers, generator housings)."""
    edge = max(edge, MIN_SIGMA)
    r, c = center
    reach = np.hypot(half_r, half_c) + 3 * edge
    win = _window(canvas.shape, r - reach, r + reach, c - reach, c + reach)
    if win is None:
        return
    box, rows, cols = win
    u, v = _rotated(rows - r, cols - c, angle)
    inside_u = 1.0 / (1.0 + np.exp((np.abs(u) - half_r) / edge))
    inside_v = 1.0 / (1.0 + np.exp((np.abs(v) - half_c) / edge))
    canvas[box] += (amp * inside_u * inside_v).astype(canvas.dtype)


def polygon_mask(shape: tuple[int, int], polygon, scale_r: float, scale_c: float) -> np.ndarray:
    """Binary mask of a polygon given in canvas units scaled by (``scale_r``, ``scale_c``).

    Even-odd rule, vectorised over the grid, one pass per edge.
    """
    poly = np.asarray(polygon, dtype=np.float64) * np.array([scale_r, scale_c])
    rows = np.arange(shape[0], dtype=np.float64)[:, None] + 0.5
    cols = np.arange(shape[1], dtype=np.float64)[None, :] + 0.5
    inside = np.zeros(shape, dtype=bool)
    for (ra, ca), (rb, cb) in zip(poly, np.roll(poly, -1, axis=0)):
        if ra == rb:
            continue
        crosses = (rows >= min(ra, rb)) & (rows < max(ra, rb))
        col_at = ca + (rows - ra) * (cb - ca) / (rb - ra)
        inside ^= crosses & (cols < col_at)
    return inside
