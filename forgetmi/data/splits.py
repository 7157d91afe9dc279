"""Forget-MI partitions, the leakage audit, and patient-level forget-set selection (SPEC §2).

forget     = every split row of a forget patient (not only the rows the forget file lists)
test       = TEST rows of the other patients
retain     = all other rows, minus
validation = a patient-disjoint, label-stratified slice carved out of retain (never folded back)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from forgetmi.errors import DataError, LeakageError

PARTITION_NAMES = ("forget", "retain", "validation", "test")


@dataclass
class Partitions:
    forget: pd.DataFrame
    retain: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

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
                     forget_path: str | os.PathLike | None = None) -> Partitions:
    """Partition the split by the forget set's patients.

    ``forget`` may be None or empty only when explicitly forgetting nobody is intended
    (``forget=None``); an empty forget *file* is an error because it is always a mistake.
    """
    if forget is not None:
        if len(forget) == 0:
            raise DataError("the forget set is empty; expected at least one patient", forget_path)
        known_rows = forget["dicom_id"].isin(split["dicom_id"])
        unknown_patient = ~forget["subject_id"].isin(split["subject_id"])
        if unknown_patient.any():
            raise DataError(f"forget patient absent from the split "
                            f"({forget.loc[unknown_patient, 'subject_id'].nunique()} such patient(s))",
                            forget_path, _line_of(forget, unknown_patient), "subject_id")
        if not known_rows.all():
            raise DataError(f"forget row's dicom_id is not in the split "
                            f"({int((~known_rows).sum())} such row(s))",
                            forget_path, _line_of(forget, ~known_rows), "dicom_id")
        test_patients = set(split.loc[split["fold"] == "TEST", "subject_id"])
        in_test = forget["subject_id"].isin(test_patients)
        if in_test.any():
            raise DataError(f"forget patient is in the TEST fold "
                            f"({forget.loc[in_test, 'subject_id'].nunique()} such patient(s)); "
                            "a forget set must be disjoint from TEST", forget_path,
                            _line_of(forget, in_test), "subject_id")
        forget_patients = set(forget["subject_id"])
    else:
        forget_patients = set()
    is_forget = split["subject_id"].isin(forget_patients)
    is_test = (split["fold"] == "TEST") & ~is_forget
    rest = split[~is_forget & ~is_test]
    retain, validation = carve_validation(rest, val_fraction, seed)
    return Partitions(forget=split[is_forget], retain=retain, validation=validation,
                      test=split[is_test])


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
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(rows, rows["severity"], groups=rows["subject_id"]))
    return rows.iloc[np.sort(train_idx)], rows.iloc[np.sort(val_idx)]


def make_forget_sets(split: pd.DataFrame, percents=(3, 6, 10), seed: int = 0,
                     size_bias: float = 2.0) -> dict[int, pd.DataFrame]:
    """Nested patient-level forget sets of about ``p``% of all rows each, disjoint from TEST.

    Patients are drawn with probability proportional to (row count) ** ``size_bias``; the
    default of 2 reproduces the reference sets' bias towards patients with many studies
    (about 12 rows per forget patient against about 4 on average). Each larger set extends the smaller one; each set's row count is as close to
    its target as the patient sizes allow without exceeding it.
    """
    percents = sorted(int(p) if float(p).is_integer() else float(p) for p in percents)
    if not percents or percents[0] <= 0 or percents[-1] >= 100:
        raise ValueError(f"percents must be in (0, 100), got {percents}")
    rows_per_patient = split[split["fold"] != "TEST"].groupby("subject_id").size()
    if rows_per_patient.empty:
        raise DataError("the split has no non-TEST rows to draw a forget set from")
    rng = np.random.default_rng(seed)
    weights = rows_per_patient.to_numpy(dtype=float) ** size_bias
    # Weighted sampling without replacement (Efraimidis-Spirakis keys).
    keys = rng.random(len(weights)) ** (1.0 / weights)
    order = rows_per_patient.index.to_numpy()[np.argsort(-keys)]
    chosen: list[int] = []
    taken = 0
    pool = list(order)
    result = {}
    for p in percents:
        target = int(round(p / 100 * len(split)))
        remaining_pool = []
        for patient in pool:
            size = int(rows_per_patient[patient])
            if taken + size <= target:
                chosen.append(patient)
                taken += size
            else:
                remaining_pool.append(patient)
        pool = remaining_pool
        if taken == 0:
            raise DataError(f"no patient fits a {p}% forget set ({target} rows)")
        result[p] = split[split["subject_id"].isin(chosen)].copy()
    return result


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
