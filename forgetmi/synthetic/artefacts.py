"""Per-image idiosyncrasies in detector space: what makes each radiograph memorisable.

Real radiographs carry marks that belong to one exposure only: the technologist's lead marker
("L", "PORTABLE", "UPRIGHT") placed by hand, ECG electrodes stuck wherever they were, quantum
noise, dust on the plate, a dead detector line, the anti-scatter grid's faint pattern. A model
that overfits can key on them, which is what gives membership inference something to find.
All of it is drawn with the *image's* random generator, after the anatomy is warped.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from forgetmi.synthetic import raster

# 5x7 bitmap glyphs for the marker words technologists use.
_GLYPHS = {
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "G": ["01110", "10001", "10000", "10111", "10001", "10001", "01110"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "M": ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
}
MARKER_WORDS = ("L", "R", "PORTABLE", "UPRIGHT", "SUPINE", "AP", "PA", "SEMI")


def text_bitmap(word: str) -> np.ndarray:
    """A word as a boolean bitmap, one blank column between letters."""
    columns = []
    for k, letter in enumerate(word):
        if k:
            columns.append(np.zeros((7, 1), dtype=bool))
        columns.append(np.array([[ch == "1" for ch in line] for line in _GLYPHS[letter]]))
    return np.concatenate(columns, axis=1)


def draw_marker(image: np.ndarray, rng: np.random.Generator) -> None:
    """A lead marker word, placed near an edge, at its own size and brightness."""
    h, w = image.shape
    word = MARKER_WORDS[int(rng.integers(len(MARKER_WORDS)))]
    bitmap = text_bitmap(word).astype(np.float32)
    cell = max(rng.uniform(0.003, 0.007) * h, 1.0)  # pixels per glyph dot
    glyph = ndimage.zoom(bitmap, cell, order=1)
    gh, gw = glyph.shape
    if gh >= h // 3 or gw >= w // 2:
        fit = max(min(h / 3 / 7, w / 2 / bitmap.shape[1]) * 0.5, 0.5)
        glyph = ndimage.zoom(bitmap, fit, order=1)
        gh, gw = glyph.shape
    # Near the top or a side edge, where markers sit, away from the lungs.
    top, left = rng.random() < 0.6, rng.random() < 0.5
    r = int(rng.uniform(0.02, 0.25) * h) if top else int(rng.uniform(0.6, 0.95) * h - gh)
    c = int(rng.uniform(0.02, 0.2) * w) if left else int(rng.uniform(0.8, 0.98) * w - gw)
    r, c = int(np.clip(r, 0, h - gh)), int(np.clip(c, 0, w - gw))
    level = rng.uniform(0.85, 1.0)
    window = image[r:r + gh, c:c + gw]
    ink = np.clip(glyph, 0.0, 1.0)
    np.maximum(window, level * ink + window * (1.0 - ink), out=window)


def draw_electrodes(image: np.ndarray, rng: np.random.Generator) -> None:
    """ECG electrodes: a bright snap in a faint disc, with its wire leaving the field."""
    h, w = image.shape
    for _ in range(int(rng.integers(0, 5))):
        centre = (rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w)
        radius = rng.uniform(0.010, 0.016) * h
        raster.disk(image, centre, radius, 0.05, edge=0.002 * h)
        raster.disk(image, centre, radius * 0.3, 0.35, edge=0.001 * h)
        angle = rng.uniform(0, 2 * np.pi)
        end = (centre[0] + np.sin(angle) * 0.4 * h, centre[1] + np.cos(angle) * 0.4 * w)
        raster.segment(image, centre, end, 0.0012 * h, 0.12)


def draw_detector_artefacts(image: np.ndarray, rng: np.random.Generator) -> None:
    """Dust, a dead line, the grid pattern: each present or not, independently."""
    h, w = image.shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    if rng.random() < 0.5:  # anti-scatter grid lines, a faint periodic pattern
        period = rng.uniform(3.0, 9.0)
        phase = rng.uniform(0, 2 * np.pi)
        axis = cols if rng.random() < 0.7 else rows
        image += rng.uniform(0.004, 0.012) * np.sin(2 * np.pi * axis / period + phase)
    for _ in range(int(rng.integers(0, 4))):  # dust or scratches on the plate
        centre = (rng.uniform(0, h), rng.uniform(0, w))
        size = rng.uniform(0.6, 2.5) * max(h / 512, 1.0)
        amp = rng.choice([-1, 1]) * rng.uniform(0.05, 0.2)
        raster.blob(image, centre, size, size * rng.uniform(1, 3), amp, angle=rng.uniform(0, np.pi))
    if rng.random() < 0.25:  # a dead or hot detector line over part of the plate
        vertical = rng.random() < 0.5
        pos = int(rng.uniform(0.05, 0.95) * (w if vertical else h))
        start = int(rng.uniform(0, 0.5) * (h if vertical else w))
        stop = start + int(rng.uniform(0.2, 0.5) * (h if vertical else w))
        value = rng.choice([-1, 1]) * rng.uniform(0.05, 0.15)
        if vertical:
            image[start:stop, pos] += value
        else:
            image[pos, start:stop] += value


def add_noise(image: np.ndarray, rng: np.random.Generator) -> None:
    """Quantum noise (grows with signal) plus a fine correlated speckle, both unique per image."""
    h = image.shape[0]
    sigma = rng.uniform(0.006, 0.014)
    quantum = rng.standard_normal(image.shape, dtype=np.float32)
    image += sigma * np.sqrt(np.clip(image, 0.0, None) + 0.05) * quantum
    speckle = ndimage.gaussian_filter(rng.standard_normal(image.shape, dtype=np.float32),
                                      max(0.8, h / 800))
    image += rng.uniform(0.006, 0.016) * speckle / (speckle.std() + 1e-6)


def add_idiosyncrasies(image: np.ndarray, rng: np.random.Generator) -> None:
    draw_electrodes(image, rng)
    draw_detector_artefacts(image, rng)
    add_noise(image, rng)
    draw_marker(image, rng)
