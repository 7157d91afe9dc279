"""``generate_dataset``: write a complete stand-in dataset folder, atomically.

Everything is written into a temporary folder beside the target and renamed onto it at the
end, so a reader sees either no dataset or a whole one. The bytes depend only on the
arguments that change the content (patients, image size, seed, forget percentages, test
fraction, label noise, atypical share): not on ``workers``, the machine or the clock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from forgetmi.data import formats
from forgetmi.data.formats import image_relpath
from forgetmi.data.splits import draw_forget_sets, side_summary
from forgetmi.synthetic import anatomy, layout
from forgetmi.synthetic.cohort import (LABEL_NOISE_SD, TEST_ROW_FRACTION, Cohort,
                                            build_cohort)
from forgetmi.synthetic.dicom import DicomInfo, write_dicom
from forgetmi.synthetic.images import ImageSpec, render_image
from forgetmi.synthetic.reports import compose_report
from forgetmi.synthetic.synonyms import synonym_table
from forgetmi.errors import DataError, SettingError
from forgetmi.utils.atomic import atomic_path

logger = logging.getLogger("forgetmi.synthetic")

GENERATOR_VERSION = "1.1"  # 1.1: forget sets drawn with a holdout (holdout.csv)
DEFAULT_PATIENTS = 120
MIMIC_PATIENTS = 1663  # the size of the real edema subset
FORGET_PERCENTS = (3, 6, 10)


def _image_tasks(cohort: Cohort, root: Path, image_size: int, source: str) -> list[tuple]:
    """One picklable task per image: what to render and where to write it."""
    seed = cohort.seed
    tasks = []
    instance: dict[int, int] = {}
    for row in cohort.table.itertuples(index=False):
        study = cohort.studies[row.study_id]
        patient = cohort.patients[row.subject_id]
        instance[row.study_id] = instance.get(row.study_id, 0) + 1
        image_key = (seed, 3, *(int(group, 16) for group in row.dicom_id.split("-")))
        spec = ImageSpec(findings=study.findings, patient_key=(seed, 1, row.subject_id),
                         study_key=(seed, 2, row.study_id), image_key=image_key)
        info = DicomInfo(subject_id=row.subject_id, study_id=row.study_id, dicom_id=row.dicom_id,
                         instance_number=instance[row.study_id], sex=patient.sex,
                         view=study.findings.view, study_date=study.date, study_time=study.time)
        path = root / layout.IMAGES / image_relpath(row.subject_id, row.study_id, row.dicom_id)
        tasks.append((spec, image_size, str(path), info, source))
    return tasks


def _render_task(task: tuple) -> tuple[int, int]:
    spec, image_size, path, info, source = task
    pixels = render_image(spec, image_size, source)
    write_dicom(path, pixels, info)
    return pixels.shape


def _write_images(tasks: list[tuple], workers: int) -> list[tuple[int, int]]:
    for task in tasks:
        Path(task[2]).parent.mkdir(parents=True, exist_ok=True)
    progress = dict(total=len(tasks), desc="synthetic images", unit="img", disable=None)
    if workers <= 1:
        return [_render_task(task) for task in tqdm(tasks, **progress)]
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_render_task, tasks, chunksize=chunk), **progress))


def _write_reports(cohort: Cohort, path: Path) -> None:
    """``all_data.tsv``: label, study id, report text; one line per study, no header."""
    lines = []
    for study_id in cohort.table["study_id"].drop_duplicates():
        study = cohort.studies[int(study_id)]
        rng = np.random.default_rng([cohort.seed, 4, study.study_id])
        lines.append(f"{study.label}\t{study.study_id}\t{compose_report(study.findings, rng)}\n")
    path.write_text("".join(lines), encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.sort_index().items()}


def _parameters(n_patients: int, image_size: int, seed: int, test_fraction: float,
                label_noise: float, atypical: float) -> dict:
    """The content-defining arguments as the manifest records them."""
    return {"n_patients": int(n_patients), "image_size": int(image_size), "seed": int(seed),
            "test_fraction": round(float(test_fraction), 6),
            "label_noise": round(float(label_noise), 6), "atypical": round(float(atypical), 6)}


def parameter_differences(root: str | os.PathLike, n_patients: int, image_size: int, seed: int,
                          test_fraction: float = TEST_ROW_FRACTION,
                          label_noise: float = LABEL_NOISE_SD,
                          atypical: float = 0.0) -> list[str] | None:
    """How the stand-in dataset in ``root`` differs from these arguments: None when ``root``
    holds no generated dataset (no manifest), ``[]`` when it was generated with the same ones,
    else one "name recorded != wanted" entry per differing argument (the generator's version
    counts: an older version drew its forget sets without a holdout)."""
    manifest = Path(root) / layout.MANIFEST
    if not manifest.is_file():
        return None
    doc = json.loads(manifest.read_text())
    # Manifests from before the atypical knob record none: theirs was off, and their bytes are
    # what the knob at 0 writes.
    recorded = {"atypical": 0.0, **doc.get("parameters", doc),
                "generator_version": doc.get("generator_version")}
    wanted = {**_parameters(n_patients, image_size, seed, test_fraction, label_noise, atypical),
              "generator_version": GENERATOR_VERSION}
    return [f"{k} {recorded.get(k)} != {v}" for k, v in sorted(wanted.items())
            if recorded.get(k) != v]


def _manifest(cohort: Cohort, root: Path, parameters: dict, percents,
              forget_sets: dict[int, pd.DataFrame], holdout: pd.DataFrame, shapes,
              source: str) -> dict:
    table = cohort.table
    widths = [shape[1] for shape in shapes]
    return {
        "generator": "forgetmi.synthetic",
        "generator_version": GENERATOR_VERSION,
        "parameters": {**parameters, "forget_percents": list(percents)},
        "background": anatomy.TEMPLATE_FILE if source == "template" else "procedural",
        "counts": {
            "patients": int(table["subject_id"].nunique()),
            "studies": int(table["study_id"].nunique()),
            "images": len(table),
            "rows_per_fold": _counts(table["fold"].value_counts()),
            "patients_per_fold": _counts(table.groupby("fold")["subject_id"].nunique()),
            "rows_per_severity": _counts(table["severity"].value_counts()),
            "label_noise_rate": round(cohort.label_noise_rate, 4),
            "content_memorable_rate": round(cohort.content_memorable_rate, 4),
            "atypical_patients": int(sum(p.atypical for p in cohort.patients.values())),
            "forget_sets": {str(p): {"patients": int(f["subject_id"].nunique()), "rows": len(f)}
                            for p, f in forget_sets.items()},
            "holdout": {k: v for k, v in side_summary(holdout).items() if k != "severity"},
        },
        "images": {"rows": parameters["image_size"], "columns_min": min(widths), "columns_max": max(widths),
                   "bits_stored": 12, "photometric": "MONOCHROME2",
                   "transfer_syntax": "explicit VR little endian"},
        "sha256": {name: _sha256(root / name) for name in
                   (layout.SPLIT, layout.REPORTS, layout.SYNONYMS, layout.HOLDOUT)},
    }


def _validate(root: Path, n_rows: int, forget_sets: dict[int, pd.DataFrame],
              holdout: pd.DataFrame) -> None:
    """Read everything back with the package's own readers before the folder is published."""
    split = formats.read_split(root / layout.SPLIT)
    reports = formats.read_reports(root / layout.REPORTS)
    formats.read_synonyms(root / layout.SYNONYMS)
    for percent, rows in forget_sets.items():
        if len(formats.read_forget_set(root / layout.forget_set_name(percent))) != len(rows):
            raise AssertionError(f"forget set {percent}% did not read back whole")
    if len(formats.read_forget_set(root / layout.HOLDOUT)) != len(holdout):
        raise AssertionError("the holdout did not read back whole")
    if len(split) != n_rows or set(reports["study_id"]) != set(split["study_id"]):
        raise AssertionError("split and reports disagree with the generated cohort")


def _check_target(out: Path, overwrite: bool) -> None:
    """An empty folder, or with ``overwrite`` a dataset generated before, may be replaced; a
    folder of anything else never is."""
    if os.path.lexists(out) and not out.is_dir():
        raise DataError("output path exists and is not a folder", out)
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise DataError("output folder is not empty; pass overwrite=True to replace it", out)
    if not (out / layout.MANIFEST).is_file():
        raise DataError(f"output folder is not a generated dataset (no {layout.MANIFEST}); "
                        "overwrite replaces only one of those: choose another folder", out)


def generate_dataset(out_dir: str | os.PathLike, n_patients: int = DEFAULT_PATIENTS,
                     image_size: int = 320, seed: int = 0, workers: int = 1,
                     overwrite: bool = False, percents=FORGET_PERCENTS,
                     background: str = "auto",
                     test_fraction: float = TEST_ROW_FRACTION,
                     label_noise: float = LABEL_NOISE_SD,
                     atypical: float = 0.0) -> layout.DatasetPaths:
    """Generate the stand-in dataset into ``out_dir`` and return its paths.

    ``image_size`` is the number of rows of every image (columns: 0.80-1.0 times that, per
    study, like real detectors); 3056 gives full MIMIC resolution (3056 x ~2544).
    ``workers`` > 1 renders in a process pool, with identical output. ``background`` is
    "auto" (the packaged radiograph when installed, else the drawing), "template" or
    "procedural". ``test_fraction`` is the TEST fold's share of rows (the real data's ~8% by
    default; a benchmark wants more unseen patients for its attacks); ``label_noise`` the spread
    of the noise between what a row shows and its written label (0.17: about one row in eight
    gets a neighbouring grade, as in the real labels' boundaries).

    ``atypical`` (default 0: off) is a second source of memory, consistent in content: that
    share of patients is labelled with its true grade while every study of theirs shows a grade
    milder by ``cohort.ATYPICAL_SHIFT`` (not below 0) in the image's edema and the report's edema,
    impression and comparison phrases. Once it is above 0, every patient gets a detail of their
    own: a pseudo-word in a sentence of each of their reports and a small mark at one place in
    each of their images, so only memorising which patient carries which detail fits an atypical
    patient's rows. The manifest counts the rows this makes memorable
    (``content_memorable_rate``) beside ``label_noise_rate``; the split never says which rows
    they are. At 0 every file but the manifest is byte-identical to what the generator wrote
    before the knob existed. Refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    out = Path(out_dir)
    if image_size < 32:
        raise SettingError(f"image_size must be at least 32, got {image_size}")
    if background not in ("auto", "template", "procedural"):
        raise SettingError(f"background must be auto, template or procedural, got {background!r}")
    _check_target(out, overwrite)
    source = background
    if source == "auto":
        source = "template" if anatomy.template_available() else "procedural"
    start = time.perf_counter()
    cohort = build_cohort(n_patients, seed, test_fraction, label_noise, atypical)
    table = cohort.table
    logger.info("stand-in dataset: %d patients, %d studies, %d images at %d px (seed %d, %s)",
                table["subject_id"].nunique(), table["study_id"].nunique(), len(table),
                image_size, seed, "template radiograph" if source == "template" else "drawn chest")
    # Warm the per-size caches before any worker forks, so each does not rebuild them.
    anatomy.background(image_size, source)
    anatomy.lung_masks(image_size)

    with atomic_path(out, folder=True, replace=out.is_dir()) as tmp:  # checked above
        tmp.mkdir()
        shapes = _write_images(_image_tasks(cohort, tmp, image_size, source), workers)
        _write_reports(cohort, tmp / layout.REPORTS)
        split = table[["subject_id", "study_id", "dicom_id", "severity", "fold"]]
        split.rename(columns={"severity": "edeme_severity"}).to_csv(tmp / layout.SPLIT, index=False)
        draw = draw_forget_sets(split, percents, seed=seed)
        forget_sets = draw.forget_sets
        for name, rows in [*((layout.forget_set_name(p), f) for p, f in forget_sets.items()),
                           (layout.HOLDOUT, draw.holdout)]:
            rows.rename(columns={"severity": "edema_severity"}).to_csv(tmp / name, index=False)
        synonym_table().to_csv(tmp / layout.SYNONYMS, index=False)
        _validate(tmp, len(table), forget_sets, draw.holdout)
        manifest = _manifest(cohort, tmp, _parameters(n_patients, image_size, seed,
                                                      test_fraction, label_noise, atypical),
                             percents, forget_sets, draw.holdout, shapes, source)
        (tmp / layout.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    logger.info("stand-in dataset written to %s in %.1f s (label noise %.1f%%; content-memorable "
                "%.1f%%; forget sets %s; holdout %d rows)", out, time.perf_counter() - start,
                100 * cohort.label_noise_rate, 100 * cohort.content_memorable_rate,
                ", ".join(f"{p}%: {len(f)} rows" for p, f in forget_sets.items()),
                len(draw.holdout))
    return layout.DatasetPaths.from_root(out)
