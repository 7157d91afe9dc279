"""What one study shows: the single record that both the radiograph and the report are made from.

Keeping it in one frozen dataclass is what makes the two modalities agree: the report says
"endotracheal tube terminates 4.2 cm above the carina" exactly where the image draws the tip.
"""

from __future__ import annotations

from dataclasses import dataclass

SIDES = ("right", "left")
ZONE_NAMES = ("upper", "mid", "lower")
LINE_KINDS = ("right ij", "left ij", "right picc", "left picc")


@dataclass(frozen=True)
class Granuloma:
    """A patient's calcified granuloma: the same in every study of that patient."""

    side: str
    zone: str
    size_mm: int
    offset: float  # position within the zone, 0..1, so that two patients differ


@dataclass(frozen=True)
class Mark:
    """A small radio-opaque mark of one patient (a retained clip, a skin marker): the same in
    every study of that patient, and no other patient's is like it."""

    side: str
    zone: str
    row: float       # position within the zone, 0..1
    col: float       # position across the lung, 0..1
    shape: str       # one of MARK_SHAPES
    size_mm: float
    angle: float     # radians


MARK_SHAPES = ("ring", "bar", "cross")


@dataclass(frozen=True)
class PatientDetail:
    """What only one patient's studies show: a rare word in every report, a mark in every image.

    Every patient has one when the generator's ``atypical`` knob is on, so having a detail says
    nothing; only which detail goes with which patient does, and a model can use that only by
    memorising the patient.
    """

    term: str        # a pseudo-word no other patient's report and no common phrase contains
    mark: Mark


@dataclass(frozen=True)
class StudyFindings:
    """Everything a study's image and report depict.

    ``severity`` is the edema grade that the image and the report show: the patient's true grade,
    except for an atypical patient's studies, which look milder (see ``cohort``). The label
    written to the split can differ (label noise between adjacent grades, as in regex-extracted
    labels).
    ``intensity`` is a continuous severity in [severity - 0.45, severity + 0.45], so neighbouring
    grades overlap a little in appearance.
    """

    severity: int
    intensity: float
    prior_severity: int | None       # the patient's previous study, for comparison phrases
    view: str                        # "PA" or "AP"
    cardiomegaly: int                # 0 none, 1 mild, 2 moderate or worse
    effusion: tuple[float, float]    # (right, left) size: 0 none, 0.3 small, 0.6 moderate, 1 large
    atelectasis: tuple[str, ...]     # sides with basilar atelectasis
    pneumothorax: str | None         # side of a small apical pneumothorax
    et_tube_cm: float | None         # tip distance above the carina
    ng_tube: bool
    central_line: str | None         # one of LINE_KINDS
    pacemaker: bool
    sternotomy: bool
    granuloma: Granuloma | None
    low_volumes: bool
    detail: PatientDetail | None = None  # the patient's own term and mark (knob ``atypical``)
