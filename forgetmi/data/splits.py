"""Forget-MI partitions, the leakage audit, and patient-level forget-set selection (SPEC §2).

forget     = every split row of a forget patient (not only the rows the forget file lists)
holdout    = every row of a holdout patient: drawn like the forget set, trained on by no model,
             the unseen side of the forget-vs-unseen attacks
test       = TEST rows of the other patients
retain     = all other rows, minus
validation = a patient-disjoint, label-stratified slice carved out of retain (never folded back),
             from the patients outside the forget set and every forget set listed to avoid
             (``data.val_avoid``): a protocol lists all its sizes, so validation, and the
             original's training rows with it, is one set whatever the size
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from forgetmi.errors import DataError, LeakageError

PARTITION_NAMES = ("forget", "retain", "validation", "test", "holdout")


@dataclass
class Partitions:
    forget: pd.DataFrame
    retain: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    holdout: pd.DataFrame | None = None  # None: no holdout configured (an empty frame)
    # Patients of the other forget sets validation was carved around (data.val_avoid).
    val_avoided: frozenset = frozenset()

    def __post_init__(self):
        if self.holdout is None:
            self.holdout = self.test.iloc[0:0]

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in PARTITION_NAMES:
            raise KeyError(f"unknown partition {name!r}; expected one of {', '.join(PARTITION_NAMES)}")
        return getattr(self, name)

    def items(self):
        return [(name, self[name]) for name in PARTITION_NAMES]

    @property
    def original_train(self) -> pd.DataFrame:
        """What the original model trains on: retain + forget (validation held out)."""
        return pd.concat([self.retain, self.forget]).sort_index()


def _line_of(forget: pd.DataFrame, mask: pd.Series) -> int:
    return int(mask.to_numpy().nonzero()[0][0]) + 2


def build_partitions(split: pd.DataFrame, forget: pd.DataFrame | None,
                     val_fraction: float = 0.1, seed: int = 0,
                     forget_path: str | os.PathLike | None = None,
                     holdout: pd.DataFrame | None = None,
                     holdout_path: str | os.PathLike | None = None,
                     val_avoid: set | frozenset = frozenset()) -> Partitions:
    """Partition the split by the forget set's (and the holdout's) patients.

    ``forget`` may be None or empty only when explicitly forgetting nobody is intended
    (``forget=None``); an empty forget *file* is an error because it is always a mistake.
    ``holdout`` (optional): patients no model trains on, checked disjoint from the forget set,
    from ``val_avoid`` and from TEST. ``val_avoid``: patients of other forget sets (checked
    with :func:`check_forget_set`) that validation must not hold; with every forget set of a
    protocol listed, ``original_train`` is the same whichever of them is ``forget``.
    """
    if forget is not None:
        check_forget_set(split, forget, forget_path)
        forget_patients = set(forget["subject_id"])
    else:
        forget_patients = set()
    avoided = frozenset(val_avoid) - forget_patients
    holdout_patients = _check_holdout(split, holdout, forget_patients | avoided, holdout_path)
    is_forget = split["subject_id"].isin(forget_patients)
    is_holdout = split["subject_id"].isin(holdout_patients)
    is_test = (split["fold"] == "TEST") & ~is_forget
    rest = split[~is_forget & ~is_test & ~is_holdout]
    # Validation is carved from the rows outside every listed forget set; their other rows
    # stay in retain (this run may train on them), and the carve depends on the pool alone.
    pool = rest[~rest["subject_id"].isin(avoided)]
    _, validation = carve_validation(pool, val_fraction, seed)
    retain = rest[~rest.index.isin(validation.index)]
    return Partitions(forget=split[is_forget], retain=retain, validation=validation,
                      test=split[is_test], holdout=split[is_holdout], val_avoided=avoided)


def check_forget_set(split: pd.DataFrame, forget: pd.DataFrame,
                     path: str | os.PathLike | None = None) -> None:
    """A forget set is non-empty, its patients and rows are the split's, none is in TEST
    (each a one-line error naming the file, line and column)."""
    if len(forget) == 0:
        raise DataError("the forget set is empty; expected at least one patient", path)
    known_rows = forget["dicom_id"].isin(split["dicom_id"])
    unknown_patient = ~forget["subject_id"].isin(split["subject_id"])
    if unknown_patient.any():
        raise DataError(f"forget patient absent from the split "
                        f"({forget.loc[unknown_patient, 'subject_id'].nunique()} such patient(s))",
                        path, _line_of(forget, unknown_patient), "subject_id")
    if not known_rows.all():
        raise DataError(f"forget row's dicom_id is not in the split "
                        f"({int((~known_rows).sum())} such row(s))",
                        path, _line_of(forget, ~known_rows), "dicom_id")
    test_patients = set(split.loc[split["fold"] == "TEST", "subject_id"])
    in_test = forget["subject_id"].isin(test_patients)
    if in_test.any():
        raise DataError(f"forget patient is in the TEST fold "
                        f"({forget.loc[in_test, 'subject_id'].nunique()} such patient(s)); "
                        "a forget set must be disjoint from TEST", path,
                        _line_of(forget, in_test), "subject_id")


HOLDOUT_FIX = ("draw forget sets and holdout together with `forgetmi make-forget-set`, or a "
               "holdout for these forget sets with `forgetmi make-forget-set --forget FILE`")


def _check_holdout(split: pd.DataFrame, holdout: pd.DataFrame | None, forget_patients: set,
                   holdout_path: str | os.PathLike | None) -> set:
    """The holdout's patients, after checking it is non-empty, known, and shares no patient
    with the forget set or TEST (each a one-line error naming the file and the fix)."""
    if holdout is None:
        return set()
    if len(holdout) == 0:
        raise DataError("the holdout is empty; expected at least one patient (or set "
                        "data.holdout to null)", holdout_path)
    test_patients = set(split.loc[split["fold"] == "TEST", "subject_id"])
    for bad, what, disjoint in (
            (~holdout["subject_id"].isin(split["subject_id"]), "absent from the split", None),
            (holdout["subject_id"].isin(forget_patients), "in the forget set", "every forget set"),
            (holdout["subject_id"].isin(test_patients), "in the TEST fold", "TEST")):
        if bad.any():
            fix = f"; the holdout must be disjoint from {disjoint}: {HOLDOUT_FIX}" if disjoint else ""
            raise DataError(f"holdout patient is {what} "
                            f"({holdout.loc[bad, 'subject_id'].nunique()} such patient(s)){fix}",
                            holdout_path, _line_of(holdout, bad), "subject_id")
    return set(holdout["subject_id"])


def carve_validation(rows: pd.DataFrame, fraction: float, seed: int):
    """Split ``rows`` into (train, validation): patient-disjoint, stratified by label."""
    if fraction <= 0:
        return rows, rows.iloc[0:0]
    if not 0 < fraction < 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5), got {fraction}")
    n_splits = max(2, round(1 / fraction))
    n_patients = rows["subject_id"].nunique()
    if n_patients < n_splits:
        raise DataError(f"too few patients ({n_patients}) to carve a {fraction:.0%} validation split")
    # The same carve is asked for several times per job (each model and partition an
    # evaluation loads) and costs ~2 s at 5,000 rows: kept per process, by what decides it.
    key = (hashlib.sha1(pd.util.hash_pandas_object(rows[["subject_id", "severity"]])
                        .to_numpy().tobytes()).hexdigest(), n_splits, seed)
    if key not in _CARVED:
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(folds.split(rows, rows["severity"], groups=rows["subject_id"]))
        _CARVED[key] = (np.sort(train_idx), np.sort(val_idx))
    train_idx, val_idx = _CARVED[key]
    return rows.iloc[train_idx], rows.iloc[val_idx]


_CARVED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _weighted_order(rows_per_patient: pd.Series, rng: np.random.Generator,
                    size_bias: float) -> np.ndarray:
    """Patients in the order of a weighted draw without replacement, weight ∝ rows ** bias
    (Efraimidis-Spirakis keys)."""
    weights = rows_per_patient.to_numpy(dtype=float) ** size_bias
    keys = rng.random(len(weights)) ** (1.0 / weights)
    return rows_per_patient.index.to_numpy()[np.argsort(-keys)]


def _fill(pool: list, rows_per_patient: pd.Series, chosen: list, taken: int,
          target: int) -> tuple[list, int]:
    """Walk ``pool`` in order, adding each patient who fits under ``target`` rows to
    ``chosen``; returns the patients passed over and the new row count."""
    passed = []
    for patient in pool:
        size = int(rows_per_patient[patient])
        if taken + size <= target:
            chosen.append(patient)
            taken += size
        else:
            passed.append(patient)
    return passed, taken


def _percents(percents) -> list:
    percents = sorted(int(p) if float(p).is_integer() else float(p) for p in percents)
    if not percents or percents[0] <= 0 or percents[-1] >= 100:
        raise ValueError(f"percents must be in (0, 100), got {percents}")
    return percents


def _training_patients(split: pd.DataFrame, exclude: set = frozenset()) -> pd.Series:
    training = split[(split["fold"] != "TEST") & ~split["subject_id"].isin(exclude)]
    rows_per_patient = training.groupby("subject_id").size()
    if rows_per_patient.empty:
        raise DataError("the split has no non-TEST rows to draw a forget set from")
    return rows_per_patient


def _nested(split: pd.DataFrame, pool: list, rows_per_patient: pd.Series,
            percents: list) -> dict:
    chosen: list = []
    taken = 0
    result = {}
    for p in percents:
        target = int(round(p / 100 * len(split)))
        pool, taken = _fill(pool, rows_per_patient, chosen, taken, target)
        if taken == 0:
            raise DataError(f"no patient fits a {p}% forget set ({target} rows)")
        result[p] = split[split["subject_id"].isin(chosen)].copy()
    return result


def make_forget_sets(split: pd.DataFrame, percents=(3, 6, 10), seed: int = 0,
                     size_bias: float = 2.0) -> dict[int, pd.DataFrame]:
    """Nested patient-level forget sets of about ``p``% of all rows each, disjoint from TEST.

    Patients are drawn with probability proportional to (row count) ** ``size_bias``; the
    default of 2 reproduces the reference sets' bias towards patients with many studies
    (about 12 rows per forget patient against about 4 on average). Each larger set extends
    the smaller one; each set's row count is as close to its target as the patient sizes allow
    without exceeding it. :func:`draw_forget_sets` also draws a holdout like them.
    """
    percents = _percents(percents)
    rows_per_patient = _training_patients(split)
    order = _weighted_order(rows_per_patient, np.random.default_rng(seed), size_bias)
    return _nested(split, list(order), rows_per_patient, percents)


@dataclass
class ForgetDraw:
    """Nested forget sets and the holdout drawn with them (:func:`draw_forget_sets`)."""

    forget_sets: dict
    holdout: pd.DataFrame


def draw_forget_sets(split: pd.DataFrame, percents=(3, 6, 10), seed: int = 0,
                     size_bias: float = 2.0) -> ForgetDraw:
    """Nested forget sets and a holdout drawn exactly like the largest of them.

    One weighted draw orders the training patients (weight ∝ rows ** ``size_bias``, as
    :func:`make_forget_sets`); a fair coin per patient sends each, in that order, to the
    forget stream or the holdout stream; the forget sets fill from the first stream and the
    holdout from the second by the same rule. The two
    streams are alike in distribution and filled alike (the holdout through the same nested
    levels), so the holdout's patients are drawn as the largest forget set's are: the same sizes, the same share of whatever makes a row memorable. Its cost: no model
    trains on the holdout's rows (about as many as the largest forget set).
    """
    percents = _percents(percents)
    rows_per_patient = _training_patients(split)
    rng = np.random.default_rng([seed, 11])
    order = _weighted_order(rows_per_patient, rng, size_bias)
    to_holdout = rng.random(len(order)) < 0.5
    forget_sets = _nested(split, list(order[~to_holdout]), rows_per_patient, percents)
    # The very procedure of the forget sets (nested fills included), its largest level kept.
    holdout = _nested(split, list(order[to_holdout]), rows_per_patient, percents)[percents[-1]]
    return ForgetDraw(forget_sets, holdout)


def draw_holdout(split: pd.DataFrame, forget: pd.DataFrame, seed: int = 0,
                 size_bias: float = 2.0) -> pd.DataFrame:
    """A holdout for given forget sets (e.g. the published ones): patients outside every
    forget set and TEST, drawn with the forget sets' weighting to the largest set's row count.

    With the forget set fixed this can only approximate :func:`draw_forget_sets`: the
    largest patients may already be in the forget set, so compare the two sides' rows per
    patient (:func:`side_summary`) before trusting the attack."""
    rows_per_patient = _training_patients(split, set(forget["subject_id"]))
    order = _weighted_order(rows_per_patient, np.random.default_rng([seed, 12]), size_bias)
    chosen: list = []
    _, taken = _fill(list(order), rows_per_patient, chosen, 0, len(forget))
    if taken == 0:
        raise DataError(f"no patient outside the forget set fits a holdout of {len(forget)} "
                        "rows")
    return split[split["subject_id"].isin(chosen)].copy()


def side_summary(rows: pd.DataFrame) -> dict:
    """Counts that say whether two sides were drawn alike (no identifiers)."""
    per_patient = rows.groupby("subject_id").size()
    return {"rows": int(len(rows)), "patients": int(len(per_patient)),
            "rows_per_patient": round(float(per_patient.mean()), 2) if len(per_patient) else 0.0,
            "severity": {int(k): int(v) for k, v in rows["severity"].value_counts().items()}}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AuditReport:
    """Result of :func:`audit_partitions`: named checks plus per-partition counts."""

    checks: list[Check]
    counts: dict[str, dict] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "counts": self.counts,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}

    def to_text(self) -> str:
        lines = ["Partition audit", "",
                 f"{'partition':<11} {'rows':>6} {'patients':>8}   severity 0/1/2/3"]
        for name, c in self.counts.items():
            sev = "/".join(str(c["severity"].get(k, 0)) for k in range(4))
            lines.append(f"{name:<11} {c['rows']:>6} {c['patients']:>8}   {sev}")
        lines.append("")
        for c in self.checks:
            lines.append(f"[{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        lines += ["", "verdict: " + ("no leakage found" if self.ok else "LEAKAGE FOUND")]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.ok:
            failed = "; ".join(f"{c.name} ({c.detail})" for c in self.checks if not c.ok)
            raise LeakageError(f"partition audit failed: {failed}")


def audit_partitions(parts: Partitions, split: pd.DataFrame | None = None) -> AuditReport:
    """Prove that no forget patient reaches retain/validation/test, and that partitions are sane.

    Reports counts only: patient identifiers never appear in the report.
    """
    patients = {name: set(frame["subject_id"]) for name, frame in parts.items()}
    checks = []

    def disjoint(a: str, b: str, label: str) -> None:
        shared = patients[a] & patients[b]
        checks.append(Check(label, not shared,
                            f"{len(shared)} shared patient(s)" if shared else "0 shared patients"))

    disjoint("forget", "retain", "forget patients absent from retain")
    disjoint("forget", "validation", "forget patients absent from validation")
    disjoint("forget", "test", "forget patients absent from test")
    disjoint("holdout", "forget", "holdout patients absent from forget")
    disjoint("holdout", "retain", "holdout patients absent from retain")
    disjoint("holdout", "validation", "holdout patients absent from validation")
    disjoint("holdout", "test", "holdout patients absent from test")
    if parts.val_avoided:
        shared = patients["validation"] & parts.val_avoided
        checks.append(Check("validation patients outside every listed forget set", not shared,
                            f"{len(shared)} shared patient(s)" if shared else
                            "0 shared patients"))
    disjoint("retain", "validation", "retain and validation patient-disjoint")
    disjoint("retain", "test", "retain and test patient-disjoint")
    disjoint("validation", "test", "validation and test patient-disjoint")
    all_index = pd.Index(np.concatenate([frame.index.to_numpy() for _, frame in parts.items()]))
    repeated = int(all_index.duplicated().sum())
    checks.append(Check("no row in two partitions", repeated == 0, f"{repeated} row(s) repeated"))
    forget_test_fold = int((parts.forget["fold"] == "TEST").sum())
    checks.append(Check("forget rows outside the TEST fold", forget_test_fold == 0,
                        f"{forget_test_fold} forget row(s) in TEST"))
    if split is not None:
        missing = int((~split.index.isin(all_index)).sum())
        checks.append(Check("every split row in a partition", missing == 0,
                            f"{missing} of {len(split)} row(s) unassigned"))
        owned = split[split["subject_id"].isin(patients["forget"])]
        incomplete = len(owned) - int(owned.index.isin(parts.forget.index).sum())
        checks.append(Check("forget holds every row of its patients", incomplete == 0,
                            f"{incomplete} row(s) of forget patients elsewhere"))
    counts = {name: {"rows": int(len(frame)), "patients": int(frame["subject_id"].nunique()),
                     "severity": {int(k): int(v) for k, v in frame["severity"].value_counts().items()}}
              for name, frame in parts.items()}
    return AuditReport(checks, counts)


def audit_shared_original(split: pd.DataFrame, forget_sets: dict, val_fraction: float = 0.1,
                          seed: int = 0, holdout: pd.DataFrame | None = None) -> Check:
    """Whether one original serves every forget set of ``forget_sets`` (name -> rows): its
    training rows (all but validation, holdout and TEST) must be the same whichever of them is
    the forget set, with validation carved around all of them."""
    avoided = frozenset().union(*(set(f["subject_id"]) for f in forget_sets.values()))
    rows = {name: set(build_partitions(split, forget, val_fraction, seed, forget_path=name,
                                       holdout=holdout, val_avoid=avoided).original_train.index)
            for name, forget in forget_sets.items()}
    first, *others = rows
    differ = {name: len(rows[name] ^ rows[first]) for name in others if rows[name] != rows[first]}
    detail = (f"{len(rows)} forget set(s), one set of {len(rows[first])} training rows"
              if not differ else "; ".join(f"{name}: {n} row(s) differ from {first}"
                                           for name, n in differ.items()))
    return Check("original's training rows the same for every listed forget set", not differ,
                 detail)
