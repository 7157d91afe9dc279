"""Render one synthetic chest radiograph as 12-bit pixels.

Pipeline: canonical chest (template or drawing) + the study's findings -> per-patient and
per-study geometry (body size, rotation, smooth elastic warp, positioning, inspiration) ->
exposure (contrast, brightness, gamma, heel effect) -> per-image idiosyncrasies (markers,
electrodes, detector artefacts, noise) -> 12-bit integers (0-4095).

Three random streams keep the modalities and repeated images consistent: the *patient* stream
fixes the body, the *study* stream the disease and the positioning, the *image* stream what is
unique to one exposure. A render depends on nothing else, so any process can make any image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from forgetmi.synthetic import anatomy, artefacts, pathology
from forgetmi.synthetic.findings import StudyFindings

MAX_VALUE = 4095  # 12 bits stored
FULL_SIZE = 3056  # rows of a typical MIMIC-CXR PA image (3056 x 2544)
BASE_SCALE = 0.92  # the chest fills a little less than the canvas, so its walls stay in view


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one image; small and picklable for worker processes."""

    findings: StudyFindings
    patient_key: tuple[int, ...]
    study_key: tuple[int, ...]
    image_key: tuple[int, ...]


@dataclass(frozen=True)
class Geometry:
    scale: float        # body size: >1 means the chest fills more of the detector
    squash: float       # vertical over horizontal scale (habitus and inspiration)
    rotation: float     # radians
    shift: tuple[float, float]
    elastic: np.ndarray | None = None  # (2, k, k) control-point shifts in canvas heights


def patient_geometry(rng: np.random.Generator) -> Geometry:
    return Geometry(scale=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)),
                    squash=float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1)),
                    rotation=float(rng.normal(0.0, 0.025)),
                    shift=(float(rng.normal(0.0, 0.012)), float(rng.normal(0.0, 0.012))),
                    elastic=rng.normal(0.0, 0.012, (2, 5, 5)))


def compose(patient: Geometry, study: Geometry) -> Geometry:
    """Study positioning on top of the patient's body (the elastic field is the patient's)."""
    return dataclasses.replace(patient, scale=patient.scale * study.scale,
                               squash=patient.squash * study.squash,
                               rotation=patient.rotation + study.rotation,
                               shift=(patient.shift[0] + study.shift[0],
                                      patient.shift[1] + study.shift[1]))


def sample_coordinates(geom: Geometry, out_shape: tuple[int, int],
                       canvas_shape: tuple[int, int]) -> np.ndarray:
    """Canvas pixel coordinates (2, H, W) sampled by every output pixel.

    Computed on a coarse grid and interpolated: the map is affine plus a smooth field, so the
    error is far below a pixel while the cost stays flat at 2,500 px.
    """
    height, width = out_shape
    gh, gw = min(height, 96), min(width, 96)
    r = np.linspace(0.5, height - 0.5, gh)[:, None]
    c = np.linspace(0.5, width - 0.5, gw)[None, :]
    # Output positions in units of image height, centred horizontally (a narrower detector
    # crops the flanks; it does not squeeze the anatomy).
    y = r / height - 0.5 - geom.shift[0]
    x = (c - width / 2.0) / height - geom.shift[1]
    cos, sin = np.cos(geom.rotation), np.sin(geom.rotation)
    yr = cos * y + sin * x
    xr = -sin * y + cos * x
    scale = BASE_SCALE * geom.scale
    p = yr / (scale * geom.squash) + 0.5
    q = xr / scale
    if geom.elastic is not None:
        k = geom.elastic.shape[-1]
        elastic = [ndimage.zoom(geom.elastic[i], (gh / k, gw / k), order=3, mode="nearest")
                   for i in range(2)]
        p = p + elastic[0][:gh, :gw]
        q = q + elastic[1][:gh, :gw]
    ch = canvas_shape[0]
    coarse = np.stack([p * ch - 0.5, (q + anatomy.ASPECT / 2.0) * ch - 0.5])
    if (gh, gw) == (height, width):
        return coarse.astype(np.float32)
    return np.stack([ndimage.zoom(coarse[i], (height / gh, width / gw), order=1)
                     for i in range(2)]).astype(np.float32)


def render_canvas(findings: StudyFindings, height: int, study_rng: np.random.Generator,
                  source: str = "auto") -> np.ndarray:
    """The canonical chest with this study's findings drawn on it (densities)."""
    canvas = np.array(anatomy.background(height, source), dtype=np.float32)
    pathology.draw_study(canvas, findings, study_rng)
    return canvas


def render_image(spec: ImageSpec, height: int, source: str = "auto") -> np.ndarray:
    """Render ``spec`` as a (height, width) uint16 array of 12-bit values (MONOCHROME2).

    The width is the study's detector aspect (0.80-1.0) times ``height``; ``FULL_SIZE`` gives
    MIMIC's resolution. ``source`` chooses the anatomical background: "auto" (the template
    when installed), "template" or "procedural".
    """
    if height < 32:
        raise ValueError(f"image height must be at least 32 px, got {height}")
    patient_rng = np.random.default_rng(spec.patient_key)
    study_rng = np.random.default_rng(spec.study_key)
    image_rng = np.random.default_rng(spec.image_key)
    f = spec.findings

    patient = patient_geometry(patient_rng)
    gain = patient_rng.normal(1.35, 0.08)  # the patient's tissue contrast
    offset = patient_rng.normal(0.0, 0.03)

    aspect = study_rng.uniform(0.80, 1.0)
    inspiration = 0.93 if f.low_volumes else study_rng.normal(1.0, 0.02)
    magnification = 1.04 if f.view == "AP" else 1.0  # AP: the chest is nearer the source
    study = Geometry(scale=magnification * study_rng.normal(1.0, 0.015), squash=inspiration,
                     rotation=study_rng.normal(0.0, 0.02),
                     shift=(study_rng.normal(0.0, 0.015), study_rng.normal(0.0, 0.015)))
    exposure = study_rng.normal(0.0, 0.03)
    canvas = render_canvas(f, height, study_rng, source)

    image_geom = Geometry(scale=image_rng.normal(1.0, 0.006), squash=1.0,
                          rotation=image_rng.normal(0.0, 0.008),
                          shift=(image_rng.normal(0.0, 0.006), image_rng.normal(0.0, 0.006)))
    geom = compose(compose(patient, study), image_geom)
    out_shape = (int(height), max(int(round(height * aspect)), 16))
    coords = sample_coordinates(geom, out_shape, canvas.shape)
    density = ndimage.map_coordinates(canvas, coords, order=1, mode="nearest")

    # Exposure: a film-like response curve, then gamma and the anode heel effect.
    value = np.tanh(np.clip(gain * density + offset + exposure, 0.0, None))
    value = value ** image_rng.uniform(0.85, 1.15)
    rows = np.linspace(-0.5, 0.5, out_shape[0], dtype=np.float32)[:, None]
    value = value * (1.0 + image_rng.normal(0.0, 0.02) * rows)
    value = value.astype(np.float32)
    artefacts.add_idiosyncrasies(value, image_rng)
    white = image_rng.uniform(0.86, 1.0)  # each image's own maximum, as in MIMIC DICOMs
    return np.rint(np.clip(value, 0.0, 1.0) * white * MAX_VALUE).astype(np.uint16)


def example_findings(severity: int, **overrides) -> StudyFindings:
    """A plain study of the given edema grade (no devices), for previews and tests."""
    base = dict(severity=severity, intensity=float(severity), prior_severity=None, view="PA",
                cardiomegaly=0, effusion=(0.0, 0.0), atelectasis=(), pneumothorax=None,
                et_tube_cm=None, ng_tube=False, central_line=None, pacemaker=False,
                sternotomy=False, granuloma=None, low_volumes=False)
    base.update(overrides)
    return StudyFindings(**base)


def example_spec(severity: int, seed: int = 0, **overrides) -> ImageSpec:
    """One standalone image spec: same patient and exposure for every ``severity``."""
    return ImageSpec(findings=example_findings(severity, **overrides),
                     patient_key=(seed, 101), study_key=(seed, 102), image_key=(seed, 103))
