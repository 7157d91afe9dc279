"""Patients, studies, images, labels and folds of the stand-in dataset.

Shaped after the real MIMIC-CXR edema subset (SPEC §2): 1,663 patients, 6,084 studies, 6,742
image rows; studies per patient roughly geometric (median 3, a long tail into the thirties);
most studies have one image, some two to four; labels 0/1/2/3 in proportion 2883/1511/1709/639;
folds 1-5 plus a patient-disjoint TEST fold of about 8% of rows.

Severity is an ordinal cut of a latent score: a patient effect plus an AR(1) process over the
patient's studies, so a patient's grade varies from study to study but stays correlated (the
real data: within-patient variance about half of the total). Cut points are the row-weighted
quantiles of the latent, so the class balance matches at any cohort size. The written label is
a second cut of the same latent plus a little noise: about one row in eight gets a neighbouring
grade, as regex-extracted labels do near the boundaries.

Two kinds of row need memory to fit, and the table says which (the split never does):

* label noise (``label_noise``): the written label (``severity``) differs from the true grade
  (``true_severity``, which the image and report show unless the patient is atypical); it
  strikes rows independently.
* atypical patients (``atypical``, a share of patients; default 0, off): their written labels
  follow their true grade, as everyone's do, but every study of theirs *shows* a milder grade,
  ``shown_severity`` = true grade − ``ATYPICAL_SHIFT`` (not below 0): the image's edema, the
  report's edema and impression phrases, the comparisons with the prior study, and what goes
  with a grade (effusions, the odds of ICU devices and an AP view). Label noise applies on top,
  independently. With the knob on, *every* patient carries an incidental detail of their own
  (``details``): a pseudo-word in a sentence of each of their reports and a small mark at the
  same place in each of their images. Having one says nothing; which one is the patient's is
  all that tells an atypical patient apart, so a model fits those rows only by memorising the
  patient. Atypical rows whose shown grade differs from their true grade are the
  *content-memorable* rows.

The atypical patients and the details come from random streams of their own, and an atypical
study's findings are drawn from the same random numbers as its true-grade findings would be:
with the knob at 0 every draw, and so every byte written, is what it was without it, and raising
it moves only what it names (labels, true grades, folds, dates and ids stay put).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from forgetmi.errors import SettingError
from forgetmi.synthetic.details import draw_details
from forgetmi.synthetic.findings import (LINE_KINDS, SIDES, ZONE_NAMES, Granuloma, PatientDetail,
                                         StudyFindings)

# Real data: rows per severity 0..3, and the TEST fold's share of rows.
SEVERITY_COUNTS = (2883, 1511, 1709, 639)
TEST_ROW_FRACTION = 531 / 6742
STUDIES_PER_PATIENT_P = 0.273          # geometric: mean ~3.7, P(>10) ~4%, as in the real data
MAX_STUDIES = 40
IMAGES_PER_STUDY = (0.8965, 0.0998, 0.0030, 0.0007)  # 1, 2, 3, 4 images (5454/607/18/5 of 6084)
PATIENT_SHARE = 0.3    # share of latent variance that is the patient's (gives within-var ~0.55)
STUDY_AUTOCORR = 0.25   # consecutive studies of a patient are alike
LABEL_NOISE_SD = 0.17  # latent noise behind the written label: ~12% of rows move one grade
EPOCH = dt.date(2110, 1, 1)  # MIMIC shifts dates into the 22nd century
ATYPICAL_SHIFT = 1  # grades by which an atypical patient's studies look milder than they are


@dataclass(frozen=True)
class Patient:
    subject_id: int
    sex: str
    latent: float
    cardiomegaly: int
    sternotomy: bool
    pacemaker: bool
    granuloma: Granuloma | None
    detail: PatientDetail | None = None  # set for every patient when ``atypical`` > 0
    atypical: bool = False               # shows milder edema than its grade


@dataclass(frozen=True)
class Study:
    subject_id: int
    study_id: int
    order: int           # 0 for the patient's first study
    n_images: int
    label: int           # written to the split (noisy)
    date: str            # YYYYMMDD
    time: str            # HHMMSS
    findings: StudyFindings  # what the study shows: findings.severity is the shown grade
    true_severity: int       # the patient's true grade at this study


@dataclass
class Cohort:
    """The generated cohort. ``table`` has one row per image, in split-file order."""

    seed: int
    patients: dict[int, Patient]
    studies: dict[int, Study]
    table: pd.DataFrame  # subject_id, study_id, dicom_id, severity (label), fold, true_severity,
                         # shown_severity

    @property
    def label_noise_rate(self) -> float:
        return float((self.table["severity"] != self.table["true_severity"]).mean())

    @property
    def content_memorable_rate(self) -> float:
        return float(self.memorable()["content"].mean())

    def memorable(self) -> pd.DataFrame:
        """Per table row, which memory fitting its label needs: ``label`` (label noise),
        ``content`` (an atypical patient's row that shows a milder grade) and ``either``.

        ``either`` is their union; in the few rows where both apply and the noise moved the
        label onto the shown grade, what the row shows explains its label after all.
        """
        table = self.table
        label = table["severity"] != table["true_severity"]
        content = table["shown_severity"] != table["true_severity"]
        return pd.DataFrame({"label": label, "content": content, "either": label | content})


def _unique_ids(rng: np.random.Generator, n: int, low: int, span: int) -> np.ndarray:
    return np.sort(rng.choice(span, size=n, replace=False) + low)


def _dicom_ids(rng: np.random.Generator, n: int) -> list[str]:
    """MIMIC-style dicom ids: five dash-separated groups of eight hex digits."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for groups in rng.integers(0, 2**32, size=(n - len(ids), 5), dtype=np.uint64):
            text = "-".join(f"{int(g):08x}" for g in groups)
            if text not in seen:
                seen.add(text)
                ids.append(text)
    return ids


def _weighted_cuts(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Cut points putting the target share of *rows* in each class."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order]) / weights.sum()
    targets = np.cumsum(SEVERITY_COUNTS)[:-1] / sum(SEVERITY_COUNTS)
    positions = np.searchsorted(cum, targets)
    sorted_values = values[order]
    return np.array([sorted_values[min(p, len(values) - 1)] for p in positions]) + 1e-12


def _within_bin(values: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """Rank of each value inside its grade, in [0, 1]: how far along the grade it lies."""
    frac = np.zeros_like(values)
    for grade in np.unique(grades):
        idx = np.flatnonzero(grades == grade)
        ranks = np.argsort(np.argsort(values[idx], kind="stable"), kind="stable")
        frac[idx] = (ranks + 0.5) / len(idx)
    return frac


def _patients(rng: np.random.Generator, n: int) -> list[Patient]:
    ids = _unique_ids(rng, n, 10_000_000, 10_000_000)
    out = []
    for subject_id, latent in zip(ids, rng.standard_normal(n)):
        sick = 1.0 / (1.0 + np.exp(-(1.2 * latent - 0.7)))
        cardiomegaly = 0 if rng.random() > sick else (2 if rng.random() < 0.35 else 1)
        granuloma = None
        if rng.random() < 0.15:
            granuloma = Granuloma(side=SIDES[rng.integers(2)], zone=ZONE_NAMES[rng.integers(3)],
                                  size_mm=int(rng.integers(3, 11)),
                                  offset=float(rng.uniform(0.15, 0.85)))
        out.append(Patient(subject_id=int(subject_id), sex="M" if rng.random() < 0.53 else "F",
                           latent=float(latent), cardiomegaly=cardiomegaly,
                           sternotomy=bool(rng.random() < 0.06 + 0.08 * sick),
                           pacemaker=bool(rng.random() < 0.03 + 0.08 * sick),
                           granuloma=granuloma))
    return out


def _atypical(seed: int, n: int, share: float) -> np.ndarray:
    """Which of ``n`` patients are atypical: ``share`` of them, from a stream of their own. The
    draw is one permutation, so a larger share keeps a smaller one's patients."""
    chosen = np.random.default_rng([seed, 12, 0]).permutation(n)[:int(round(share * n))]
    flags = np.zeros(n, dtype=bool)
    flags[chosen] = True
    return flags


def _with_details(patients: list[Patient], seed: int, share: float) -> list[Patient]:
    """Every patient's own detail, and the atypical ones marked (nothing when ``share`` is 0)."""
    if share == 0.0:
        return patients
    flags = _atypical(seed, len(patients), share)
    details = draw_details(seed, len(patients))
    return [replace(p, detail=d, atypical=bool(a)) for p, d, a in zip(patients, details, flags)]


def _study_findings(rng: np.random.Generator, patient: Patient, severity: int, intensity: float,
                    prior: int | None) -> StudyFindings:
    icu = rng.random() < 0.08 + 0.12 * severity
    view = "AP" if (icu or rng.random() < 0.30 + 0.12 * severity) else "PA"
    et_tube = round(float(rng.uniform(2.0, 6.5)), 1) if icu and rng.random() < 0.65 else None
    ng_tube = bool(rng.random() < (0.8 if et_tube is not None else 0.03))
    central_line = (LINE_KINDS[rng.integers(len(LINE_KINDS))]
                    if rng.random() < 0.12 + 0.10 * severity + 0.3 * icu else None)
    cardiomegaly = patient.cardiomegaly
    if rng.random() < 0.15:  # readers disagree study to study about borderline hearts
        cardiomegaly = int(np.clip(cardiomegaly + rng.choice([-1, 1]), 0, 2))
    p_effusion = (0.06, 0.18, 0.38, 0.80)[severity]
    size = (0.3, 0.3, 0.6, 0.8)[severity]
    effusion = tuple(float(np.clip(size + rng.normal(0, 0.12), 0.2, 1.0))
                     if rng.random() < p_effusion else 0.0 for _ in SIDES)
    atelectasis: tuple[str, ...] = ()
    if rng.random() < 0.25 + 0.06 * severity:
        atelectasis = (("right", "left"), ("left",), ("right",))[rng.choice(3, p=[0.4, 0.35, 0.25])]
    pneumothorax = SIDES[rng.integers(2)] if rng.random() < 0.012 + 0.03 * icu else None
    return StudyFindings(severity=severity, intensity=intensity, prior_severity=prior, view=view,
                         cardiomegaly=cardiomegaly, effusion=effusion, atelectasis=atelectasis,
                         pneumothorax=pneumothorax, et_tube_cm=et_tube, ng_tube=ng_tube,
                         central_line=central_line, pacemaker=patient.pacemaker,
                         sternotomy=patient.sternotomy, granuloma=patient.granuloma,
                         low_volumes=bool(rng.random() < 0.12 + 0.1 * (view == "AP")))


def _shown_findings(rng: np.random.Generator, patient: Patient, true: int, shown: int,
                    intensity: float, prior: int | None) -> StudyFindings:
    """The findings a study shows at grade ``shown``, drawn from the random numbers its findings
    at the ``true`` grade would take; ``rng`` advances exactly as for those, so nothing drawn
    after them (dates, ids, folds) depends on whether the patient is atypical."""
    twin = copy.deepcopy(rng) if shown != true else None
    findings = _study_findings(rng, patient, true, intensity, prior)
    if twin is not None:
        findings = _study_findings(twin, patient, shown, intensity, prior)
    return findings if patient.detail is None else replace(findings, detail=patient.detail)


def _assign_folds(rng: np.random.Generator, rows_per_patient: pd.Series,
                  test_fraction: float = TEST_ROW_FRACTION) -> dict[int, str]:
    """TEST: random patients up to ``test_fraction`` of rows (the real ~8% by default); the rest
    dealt round-robin into folds 1-5."""
    patients = rows_per_patient.index.to_numpy()[rng.permutation(len(rows_per_patient))]
    target = int(round(test_fraction * rows_per_patient.sum()))
    folds: dict[int, str] = {}
    taken = 0
    for patient in patients:
        size = int(rows_per_patient[patient])
        if taken + size <= target:
            folds[int(patient)] = "TEST"
            taken += size
    rest = [int(p) for p in patients if int(p) not in folds]
    for k, patient in enumerate(rest):
        folds[patient] = str(k % 5 + 1)
    return folds


def build_cohort(n_patients: int, seed: int, test_fraction: float = TEST_ROW_FRACTION,
                 label_noise: float = LABEL_NOISE_SD, atypical: float = 0.0) -> Cohort:
    """Draw the whole cohort for ``seed``: identical for identical arguments.

    ``test_fraction`` is the TEST fold's share of rows; only the fold assignment depends on it.
    ``label_noise`` is the spread of the noise between the latent severity (which the image and
    the report show) and the written label: how much of a row's label only memory can explain.
    ``atypical`` is the share of patients whose studies show a milder grade than their (written)
    true one, told apart only by a detail of their own (module docstring); 0 turns it off.
    """
    if not 0.0 < test_fraction < 0.5:
        raise SettingError(f"test_fraction must be in (0, 0.5), got {test_fraction}")
    if not 0.0 <= label_noise <= 2.0:
        raise SettingError(f"label_noise must be in [0, 2], got {label_noise}")
    if not (math.isfinite(atypical) and 0.0 <= atypical <= 1.0):
        raise SettingError(f"atypical must be a share of patients in [0, 1], got {atypical}")
    if n_patients < 20:
        raise SettingError(f"n_patients must be at least 20 (five folds, TEST and three forget "
                           f"sets need patients), got {n_patients}")
    rng = np.random.default_rng([seed, 11])
    patients = _with_details(_patients(rng, n_patients), seed, atypical)
    n_studies = np.minimum(rng.geometric(STUDIES_PER_PATIENT_P, n_patients), MAX_STUDIES)
    study_ids = rng.permutation(_unique_ids(rng, int(n_studies.sum()), 50_000_000, 10_000_000))
    n_images = rng.choice(len(IMAGES_PER_STUDY), size=len(study_ids), p=IMAGES_PER_STUDY) + 1

    # Latent severity per study: patient effect + AR(1) over the patient's studies.
    latent = np.empty(len(study_ids))
    start = 0
    for i, k in enumerate(n_studies):
        e = np.empty(k)
        e[0] = rng.standard_normal()
        for t in range(1, k):
            innovation = np.sqrt(1 - STUDY_AUTOCORR ** 2) * rng.standard_normal()
            e[t] = STUDY_AUTOCORR * e[t - 1] + innovation
        latent[start:start + k] = (np.sqrt(PATIENT_SHARE) * patients[i].latent
                                   + np.sqrt(1 - PATIENT_SHARE) * e)
        start += k
    true = np.digitize(latent, _weighted_cuts(latent, n_images))
    intensity = true + 0.9 * (_within_bin(latent, true) - 0.5)
    noisy = latent + label_noise * rng.standard_normal(len(latent))
    label = np.digitize(noisy, _weighted_cuts(noisy, n_images))
    # Atypical patients' studies look milder: grade and appearance shift down together.
    odd = np.repeat([p.atypical for p in patients], n_studies)
    shown = np.where(odd, np.maximum(true - ATYPICAL_SHIFT, 0), true)
    shown_intensity = intensity - (true - shown)

    studies: dict[int, Study] = {}
    start = 0
    for i, k in enumerate(n_studies):
        patient = patients[i]
        day = int(rng.integers(0, 75 * 365))
        prior = None
        for t in range(k):
            j = start + t
            findings = _shown_findings(rng, patient, int(true[j]), int(shown[j]),
                                       float(shown_intensity[j]), prior)
            date = EPOCH + dt.timedelta(days=day)
            clock = int(rng.integers(0, 86400))
            studies[int(study_ids[j])] = Study(
                subject_id=patient.subject_id, study_id=int(study_ids[j]), order=t,
                n_images=int(n_images[j]), label=int(label[j]), date=date.strftime("%Y%m%d"),
                time=f"{clock // 3600:02d}{clock % 3600 // 60:02d}{clock % 60:02d}",
                findings=findings, true_severity=int(true[j]))
            prior = int(shown[j])  # a report compares what the two studies show
            # Inpatients are imaged daily; outpatients months apart.
            day += int(rng.integers(1, 4)) if rng.random() < 0.5 else int(rng.exponential(200)) + 1
        start += k

    dicom_ids = iter(_dicom_ids(rng, int(n_images.sum())))
    records = [(s.subject_id, s.study_id, next(dicom_ids), s.label, s.true_severity,
                s.findings.severity) for s in studies.values() for _ in range(s.n_images)]
    table = pd.DataFrame(records, columns=["subject_id", "study_id", "dicom_id", "severity",
                                           "true_severity", "shown_severity"])
    folds = _assign_folds(rng, table.groupby("subject_id").size(), test_fraction)
    table["fold"] = table["subject_id"].map(folds)
    table = table.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable")
    table = table.reset_index(drop=True)
    table = table[["subject_id", "study_id", "dicom_id", "severity", "fold", "true_severity",
                   "shown_severity"]]
    table = table.astype({"subject_id": "int64", "study_id": "int64", "severity": "int64",
                          "true_severity": "int64", "shown_severity": "int64"})
    return Cohort(seed=seed, patients={p.subject_id: p for p in patients}, studies=studies,
                  table=table)
