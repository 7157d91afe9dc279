"""The stand-in dataset: layout, formats, determinism, statistics, severity, membership signal."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import scipy
from scipy import ndimage
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from forgetmi.data import formats
from forgetmi.synthetic import (DatasetPaths, example_spec, generate_dataset, render_image)
from forgetmi.synthetic import anatomy, parameter_differences, pathology
from forgetmi.synthetic.cohort import ATYPICAL_SHIFT, SEVERITY_COUNTS, build_cohort
from forgetmi.synthetic.dicom import DicomInfo, sop_uid, study_uid, write_dicom
from forgetmi.synthetic.images import FULL_SIZE, ImageSpec
from forgetmi.synthetic.reports import SEVERITY_PHRASES, compose_report, vocabulary
from forgetmi.errors import DataError

KEYWORDS = ("atelectasis", "lung", "edema", "cardiomegaly", "silhouette", "pneumothorax",
            "markings", "disease", "chest")
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> DatasetPaths:
    """The default cohort (120 patients) with small images, generated once for this module."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data", n_patients=120,
                            image_size=128, seed=0)


@pytest.fixture(scope="module")
def split(dataset):
    return formats.read_split(dataset.split)


@pytest.fixture(scope="module")
def reports(dataset):
    return formats.read_reports(dataset.reports)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _per_sample_loss(model, x, y) -> np.ndarray:
    proba = model.predict_proba(x)
    column = np.searchsorted(model.classes_, y)
    return -np.log(np.clip(proba[np.arange(len(y)), column], 1e-12, 1.0))


# ----------------------------------------------------------------------------------- layout


def test_layout_and_formats(dataset, split, reports):
    assert sorted(p.name for p in dataset.root.iterdir()) == sorted(
        ["images", "all_data.tsv", "split.csv", "forget_set_3per.csv", "forget_set_6per.csv",
         "forget_set_10per.csv", "holdout.csv", "Synonyms.csv", "manifest.json"])
    assert DatasetPaths.from_root(dataset.root) == dataset
    assert sorted(dataset.forget_sets) == [3, 6, 10]
    # The holdout: as many rows as the largest forget set allows, no patient of it or of TEST.
    holdout = pd.read_csv(dataset.holdout)
    forget = pd.read_csv(dataset.forget_sets[10])
    assert 0 < len(holdout) <= round(0.10 * len(split))
    assert not set(holdout["subject_id"]) & set(forget["subject_id"])
    assert not set(holdout["subject_id"]) & set(split.loc[split["fold"] == "TEST", "subject_id"])
    header = dataset.split.read_text().splitlines()[0]
    assert header == "subject_id,study_id,dicom_id,edeme_severity,fold"
    assert dataset.forget_sets[3].read_text().splitlines()[0] == \
        "subject_id,study_id,dicom_id,edema_severity,fold"
    # MIMIC identifiers.
    assert split["subject_id"].between(10_000_000, 19_999_999).all()
    assert split["study_id"].between(50_000_000, 59_999_999).all()
    assert split["dicom_id"].map(lambda s: bool(DICOM_ID.match(s))).all()
    assert split["dicom_id"].is_unique
    # No leftovers of the atomic write beside the folder.
    assert [p.name for p in dataset.root.parent.iterdir()] == [dataset.root.name]


def test_every_row_has_its_dicom_and_report(dataset, split, reports):
    files = sorted(dataset.img_dir.rglob("*.dcm"))
    assert len(files) == len(split)
    assert set(reports["study_id"]) == set(split["study_id"])  # one report per study
    labels = split.drop_duplicates("study_id").set_index("study_id")["severity"]
    written = reports.set_index("study_id")["label"].astype(int)
    assert (written == labels.loc[written.index]).all()
    for row in split.sample(20, random_state=0).itertuples():
        path = formats.resolve_image_path(dataset.img_dir, row.subject_id, row.study_id,
                                          row.dicom_id)
        assert path.is_file(), path
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
        assert ds.PixelRepresentation == 0
        assert ds.PatientID == str(row.subject_id)
        assert ds.StudyInstanceUID == study_uid(row.study_id)
        assert ds.SOPInstanceUID == sop_uid(row.dicom_id) == ds.file_meta.MediaStorageSOPInstanceUID
        pixels = ds.pixel_array
        assert ds.Rows == 128 and 0.79 * 128 <= ds.Columns <= 128
        assert pixels.dtype == np.uint16 and pixels.max() <= 4095 and pixels.std() > 100


def test_synonyms_and_manifest(dataset, split, reports):
    synonyms = formats.read_synonyms(dataset.synonyms)
    assert 200 <= len(dataset.synonyms.read_text().splitlines()) - 1 <= 1000
    vocabulary = {w for text in reports["text"] for w in text.split()}
    for word in ("edema", "lung", "effusion", "cardiomegaly", "atelectasis", "markings"):
        assert word in synonyms and word in vocabulary
    assert len(vocabulary & set(synonyms)) >= 60
    manifest = json.loads(dataset.manifest.read_text())
    assert manifest["parameters"] == {"n_patients": 120, "image_size": 128, "seed": 0,
                                      "test_fraction": round(531 / 6742, 6),
                                      "label_noise": 0.17, "atypical": 0.0,
                                      "forget_percents": [3, 6, 10]}
    counts = manifest["counts"]
    assert counts["content_memorable_rate"] == 0.0 and counts["atypical_patients"] == 0
    assert counts["images"] == len(split) and counts["studies"] == len(reports)
    assert sum(counts["rows_per_fold"].values()) == len(split)
    assert counts["rows_per_severity"] == {str(k): int(v) for k, v in
                                           split["severity"].value_counts().sort_index().items()}
    text = dataset.manifest.read_text()
    assert not any(sentence in text for t in reports["text"] for sentence in t.split(" . ")
                   if len(sentence) > 12)


def test_refuses_to_overwrite(dataset, tmp_path):
    with pytest.raises(DataError, match="not empty"):
        generate_dataset(dataset.root, n_patients=20, image_size=64)
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="overwrite=True"):
        generate_dataset(out, n_patients=20, image_size=64)
    assert (out / "keep.txt").is_file()
    # overwrite replaces a dataset generated before, never a folder of anything else
    with pytest.raises(DataError, match="not a generated dataset"):
        generate_dataset(out, n_patients=20, image_size=64, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    generated = generate_dataset(tmp_path / "generated", n_patients=20, image_size=64)
    paths = generate_dataset(generated.root, n_patients=20, image_size=64, seed=1, overwrite=True)
    assert paths.split.is_file() and paths.manifest.is_file()
    with pytest.raises(ValueError, match="at least 20"):
        generate_dataset(tmp_path / "tiny", n_patients=5, image_size=64)


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    first = generate_dataset(tmp_path / "a", n_patients=20, image_size=64, seed=7)
    again = generate_dataset(tmp_path / "b", n_patients=20, image_size=64, seed=7, workers=2)
    other = generate_dataset(tmp_path / "c", n_patients=20, image_size=64, seed=8)
    a, b, c = _digests(first.root), _digests(again.root), _digests(other.root)
    assert len(a) > 60 and a == b
    assert a["Synonyms.csv"] == c["Synonyms.csv"]  # the table does not depend on the seed
    for name in ("split.csv", "all_data.tsv", "forget_set_10per.csv", "manifest.json"):
        assert a[name] != c[name]
    assert not set(k for k in a if k.endswith(".dcm")) & set(k for k in c if k.endswith(".dcm"))


# ------------------------------------------------------------------------- cohort statistics


def test_cohort_matches_the_real_statistics():
    cohort = build_cohort(1663, seed=0)
    table = cohort.table
    n = len(table)
    assert 6000 < n < 7500 and table["subject_id"].nunique() == 1663
    share = table["severity"].value_counts(normalize=True).sort_index().to_numpy()
    target = np.array(SEVERITY_COUNTS) / sum(SEVERITY_COUNTS)
    assert np.abs(share - target).max() < 0.01
    rows = table.groupby("subject_id").size()
    assert 3.6 < rows.mean() < 4.6 and rows.median() == 3 and 20 <= rows.max() <= 45
    per_study = table.groupby("study_id").size()
    assert 0.85 < (per_study == 1).mean() < 0.94 and per_study.max() >= 3
    # Labels move at most one grade, for roughly one row in eight.
    assert 0.08 < cohort.label_noise_rate < 0.17
    assert (table["severity"] - table["true_severity"]).abs().max() == 1
    # A patient's grade varies across studies but is correlated.
    studies = table.drop_duplicates("study_id")
    patient_mean = studies.groupby("subject_id")["severity"].transform("mean")
    within = (studies["severity"] - patient_mean).pow(2).mean()
    assert 0.3 < within / studies["severity"].var() < 0.7
    # Folds: patient-disjoint; TEST about 8% of rows; five training folds of similar size.
    assert (table.groupby("subject_id")["fold"].nunique() == 1).all()
    folds = table["fold"].value_counts(normalize=True)
    assert 0.07 < folds["TEST"] < 0.085
    assert all(0.15 < folds[str(k)] < 0.22 for k in range(1, 6))


def test_benchmark_knobs_move_only_what_they_name():
    base = build_cohort(400, seed=0)
    wide = build_cohort(400, seed=0, test_fraction=0.25)
    noisy = build_cohort(400, seed=0, label_noise=0.8)
    # test_fraction: only the folds move; TEST holds ~25% of rows, patients still whole
    assert base.table.drop(columns="fold").equals(wide.table.drop(columns="fold"))
    share = (wide.table["fold"] == "TEST").mean()
    assert 0.23 < share < 0.26 and (base.table["fold"] == "TEST").mean() < 0.085
    assert (wide.table.groupby("subject_id")["fold"].nunique() == 1).all()
    # label_noise: only the written labels move, for more rows, still at the real class balance
    assert base.table["true_severity"].equals(noisy.table["true_severity"])
    assert base.label_noise_rate < 0.17 and noisy.label_noise_rate > 0.35
    written = noisy.table["severity"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.abs(written - np.array(SEVERITY_COUNTS) / sum(SEVERITY_COUNTS)).max() < 0.02
    for bad in ({"test_fraction": 0.6}, {"test_fraction": 0.0}, {"label_noise": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_cohort(400, seed=0, **bad)


def test_forget_sets_are_nested_and_leave_test_alone(dataset, split):
    sets = {p: formats.read_forget_set(path) for p, path in dataset.forget_sets.items()}
    patients = {p: set(f["subject_id"]) for p, f in sets.items()}
    assert patients[3] < patients[6] < patients[10]
    test_patients = set(split.loc[split["fold"] == "TEST", "subject_id"])
    for percent, frame in sets.items():
        assert not patients[percent] & test_patients
        assert 0 < len(frame) <= round(percent / 100 * len(split))
        assert len(frame) >= 0.6 * percent / 100 * len(split)
        assert frame["dicom_id"].isin(split["dicom_id"]).all()
        # every row of a chosen patient is in the set
        assert len(frame) == split["subject_id"].isin(patients[percent]).sum()


# ----------------------------------------------------------------------------------- images


def test_severity_is_visible():
    """Same patient and exposure, increasing grade: the lungs get steadily denser."""
    lungs = []
    for severity in range(4):
        image = render_image(example_spec(severity, seed=5), 256).astype(np.float64)
        h, w = image.shape
        band = image[int(0.25 * h):int(0.65 * h)]
        lungs.append(np.r_[band[:, int(0.15 * w):int(0.40 * w)].ravel(),
                           band[:, int(0.60 * w):int(0.85 * w)].ravel()].mean())
    steps = np.diff(lungs)
    assert (steps > 50).all(), lungs  # 12-bit values; same image seed, so no noise between them


def test_procedural_background_and_template():
    spec = example_spec(2, seed=1)
    drawn = render_image(spec, 96, source="procedural")
    assert drawn.shape[0] == 96 and drawn.max() <= 4095 and drawn.std() > 100
    if anatomy.template_available():
        assert not np.array_equal(drawn, render_image(spec, 96, source="template"))


def test_full_size_dicom(tmp_path):
    """One image at full MIMIC resolution (3056 x ~2500 px), 12 bits, a valid DICOM file."""
    pixels = render_image(example_spec(3, seed=2), FULL_SIZE)
    info = DicomInfo(subject_id=10000032, study_id=50414267, dicom_id="02aa804e-bde0afdd-112c0b34-"
                     "7bc16630-4e384014", instance_number=1, sex="F", view="PA",
                     study_date="21800506", study_time="213015")
    path = tmp_path / "full.dcm"
    write_dicom(path, pixels, info)
    ds = pydicom.dcmread(path)
    assert ds.Rows == FULL_SIZE and 0.79 * FULL_SIZE <= ds.Columns <= FULL_SIZE
    assert ds.BitsStored == 12
    read = ds.pixel_array
    assert np.array_equal(read, pixels) and 3000 < read.max() <= 4095


# ------------------------------------------------------------------------------------- text


def test_reports_follow_the_findings(reports):
    text = " ".join(reports["text"])
    for keyword in KEYWORDS:
        assert f" {keyword} " in f" {text} ", keyword
    for report in reports["text"]:
        assert report == report.lower() and re.fullmatch(r"[a-z0-9 .,\-]+", report)
    cohort = build_cohort(120, seed=0)
    for study in list(cohort.studies.values())[:200]:
        report = compose_report(study.findings, np.random.default_rng([0, 4, study.study_id]))
        assert any(phrase in report for phrase in SEVERITY_PHRASES[study.findings.severity])
        if study.findings.et_tube_cm is not None:
            assert f"{study.findings.et_tube_cm:.1f} cm" in report
    assert reports["text"].nunique() == len(reports)  # every report is its own


# ------------------------------------------------------------------------ membership signal


def test_membership_signal_in_both_modalities(dataset, split, reports):
    """An overfit model's per-sample loss separates its training rows from unseen ones."""
    rng = np.random.default_rng(0)
    patients = split["subject_id"].unique()
    members = set(rng.choice(patients, len(patients) // 2, replace=False))

    studies = split.drop_duplicates("study_id").merge(reports, on="study_id")
    is_member = studies["subject_id"].isin(members).to_numpy()
    labels = studies["severity"].to_numpy()
    features = HashingVectorizer(ngram_range=(1, 3), n_features=2**14, alternate_sign=False,
                                 norm="l2").transform(studies["text"])
    images = []
    for row in split.itertuples():
        path = formats.resolve_image_path(dataset.img_dir, row.subject_id, row.study_id,
                                          row.dicom_id)
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
        pixels /= pixels.max()
        small = ndimage.zoom(pixels, (32 / pixels.shape[0], 32 / pixels.shape[1]), order=1)
        images.append(small[:32, :32])
    pixels = np.stack(images).reshape(len(images), -1)
    img_member = split["subject_id"].isin(members).to_numpy()
    img_labels = split["severity"].to_numpy()
    pixels = (pixels - pixels[img_member].mean(0)) / (pixels[img_member].std(0) + 1e-6)

    with threadpool_limits(1):  # tiny problems; threads only add contention on a busy machine
        text_model = LogisticRegression(C=1e4, max_iter=500)
        text_model.fit(features[is_member], labels[is_member])
        image_model = LogisticRegression(C=1e3, max_iter=500)
        image_model.fit(pixels[img_member], img_labels[img_member])
        # The labels are learnable from the images too (not just memorised).
        image_probe = LogisticRegression(C=0.01, max_iter=500)
        image_probe.fit(pixels[img_member], img_labels[img_member])
    text_auc = roc_auc_score(is_member, -_per_sample_loss(text_model, features, labels))
    image_auc = roc_auc_score(img_member, -_per_sample_loss(image_model, pixels, img_labels))
    assert text_model.score(features[is_member], labels[is_member]) == 1.0
    assert text_auc > 0.6, text_auc
    assert image_auc > 0.65, image_auc
    assert text_model.score(features[~is_member], labels[~is_member]) > 0.6
    majority = (img_labels[~img_member] == np.bincount(img_labels[img_member]).argmax()).mean()
    assert image_probe.score(pixels[~img_member], img_labels[~img_member]) > majority + 0.05


def test_holdout_is_drawn_like_the_forget_set_over_draws(capsys):
    """Over 20 generator draws (metadata only) the holdout's memorable share and rows per
    patient centre on the forget set's; TEST's rows per patient do not (drawn uniformly)."""
    from forgetmi.cli import main
    from forgetmi.synthetic.draws import compare_draws

    table, summary = compare_draws(20, 300, test_fraction=0.25, label_noise=0.5)
    assert len(table) == 20
    assert summary["forget_minus_holdout_memorable"]["covers_0"]
    assert summary["forget_minus_holdout_rows_per_patient"]["covers_0"]
    assert summary["forget_minus_test_rows_per_patient"]["low"] > 2  # the bias it replaces
    assert main(["check-holdout", "--draws", "3", "--patients", "200"]) == 0
    assert "forget_minus_holdout_memorable" in capsys.readouterr().out
    # with atypical patients: the memorable share of each kind, and of either
    assert main(["check-holdout", "--draws", "2", "--patients", "100", "--atypical", "0.3"]) == 0
    out = capsys.readouterr().out
    for kind in ("memorable", "label_memorable", "content_memorable"):
        assert f"forget_minus_holdout_{kind}:" in out


# ------------------------------------------------------------------------- atypical patients

# What the generator wrote before the atypical knob existed: a 20-patient dataset (64 px, seed 7,
# the drawn chest) file by file, its manifest less the knob's three entries, and a 300-patient
# cohort's table and reports (seed 3, label noise 0.5).
BEFORE_ATYPICAL = {
    "split.csv": "5b50d42f6b7c89ab980d68d72fd5612fcaafd25ac0165dd0418b79eeb7530f95",
    "all_data.tsv": "2e4699580ce606bd9c0ef6f75fe601c175d6c4169cc0af17813de83e8317ccfe",
    "forget_set_3per.csv": "42ddde43d2e6e5e5296183b1032531b8e99235ad7fcffc7f7a1be26ee2a94b15",
    "forget_set_6per.csv": "472585d86890a82b34e3787843894cb1073307c5597b2f632d39566558b61635",
    "forget_set_10per.csv": "70f03b94aa87b5eb3527acb5ba098871fb864110415c320cb656ab542f8caa6b",
    "holdout.csv": "08b1b242ab85f9be047f0aa508790cb9c852ad418d5a88b7c8c211870659770c",
    "Synonyms.csv": "384fbcc4757eb642edbdcc4a0ba3583cdff835783dcfe9b5bfda60186934bb44",
}
MANIFEST_BEFORE_ATYPICAL = "0572b0180e28e90f2caa2de97a95e49d0a3f08611be6ae4522d5eb57172f44c1"
IMAGES_BEFORE_ATYPICAL = "b4e8355fedaa97ecd7f24111eeb8ea08b456ed84284cddef9205fb7ae4c54ca3"
TABLE_BEFORE_ATYPICAL = "96afddeb2744e3f84ef00365e7b57e80a96b5435ceec943050fc11c648717d83"
REPORTS_BEFORE_ATYPICAL = "08d26ad0afdf1bd86f31a7a30725d739f70415e69597f1fefd72e85f9f3c9645"
# Pixel bytes follow numpy's and scipy's floating point and pydicom's writer: they are compared
# on the versions they were recorded with (the text files, everywhere).
IMAGES_RECORDED_WITH = {"numpy": "2.4", "scipy": "1.17", "pydicom": "3.0"}
OLD_COLUMNS = ["subject_id", "study_id", "dicom_id", "severity", "fold", "true_severity"]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_atypical_off_writes_what_the_generator_wrote_before(tmp_path):
    paths = generate_dataset(tmp_path / "data", n_patients=20, image_size=64, seed=7,
                             background="procedural", atypical=0.0)
    digests = _digests(paths.root)
    assert {name: digests[name] for name in BEFORE_ATYPICAL} == BEFORE_ATYPICAL
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["parameters"].pop("atypical") == 0.0
    assert manifest["counts"].pop("atypical_patients") == 0
    assert manifest["counts"].pop("content_memorable_rate") == 0.0
    assert _sha(json.dumps(manifest, indent=2, sort_keys=True) + "\n") == MANIFEST_BEFORE_ATYPICAL
    versions = {"numpy": _minor(np.__version__), "scipy": _minor(scipy.__version__),
                "pydicom": _minor(pydicom.__version__)}
    if versions == IMAGES_RECORDED_WITH:
        images = "".join(f"{name}:{digest}\n" for name, digest in sorted(digests.items())
                         if name.endswith(".dcm"))
        assert _sha(images) == IMAGES_BEFORE_ATYPICAL
    cohort = build_cohort(300, seed=3, label_noise=0.5, atypical=0.0)
    assert _sha(cohort.table[OLD_COLUMNS].to_csv(index=False)) == TABLE_BEFORE_ATYPICAL
    assert cohort.table["shown_severity"].equals(cohort.table["true_severity"])
    texts = "".join(compose_report(s.findings, np.random.default_rng([3, 4, s.study_id])) + "\n"
                    for s in cohort.studies.values())
    assert _sha(texts) == REPORTS_BEFORE_ATYPICAL


def test_atypical_and_label_noise_move_only_what_they_name():
    base = build_cohort(500, seed=0)
    odd = build_cohort(500, seed=0, atypical=0.2)
    fewer = build_cohort(500, seed=0, atypical=0.1)
    noisy = build_cohort(500, seed=0, label_noise=0.8, atypical=0.2)
    table = odd.table
    # atypical: labels, true grades, folds and ids stay as they were; only what rows show moves
    assert table[OLD_COLUMNS].equals(base.table[OLD_COLUMNS])
    assert odd.label_noise_rate == base.label_noise_rate and base.content_memorable_rate == 0.0
    flags = {subject: p.atypical for subject, p in odd.patients.items()}
    assert sum(flags.values()) == 100
    is_odd = table["subject_id"].map(flags).to_numpy()
    milder = np.maximum(table["true_severity"] - ATYPICAL_SHIFT, 0)
    assert (table["shown_severity"] == np.where(is_odd, milder, table["true_severity"])).all()
    expected = 0.2 * (table["true_severity"] >= ATYPICAL_SHIFT).mean()
    assert abs(odd.content_memorable_rate - expected) < 0.03, (odd.content_memorable_rate, expected)
    kinds = odd.memorable()
    assert kinds["content"].equals(pd.Series(is_odd & (table["true_severity"] > 0).to_numpy()))
    assert kinds["either"].equals(kinds["label"] | kinds["content"])
    # the other patients: the same labels and the same findings, bar their detail
    assert table.loc[~is_odd, "severity"].value_counts().equals(
        base.table.loc[~is_odd, "severity"].value_counts())
    for study_id, study in odd.studies.items():
        if not flags[study.subject_id]:
            assert replace(study.findings, detail=None) == base.studies[study_id].findings
    # a larger share keeps a smaller one's patients
    assert ({s for s, p in fewer.patients.items() if p.atypical}
            < {s for s, flag in flags.items() if flag})
    # label_noise: the labels move, what the rows show does not
    assert noisy.table["shown_severity"].equals(table["shown_severity"])
    assert noisy.content_memorable_rate == odd.content_memorable_rate
    assert noisy.label_noise_rate > 0.35 > odd.label_noise_rate


def test_every_report_names_its_patients_term_and_no_other(tmp_path):
    from forgetmi.cli import main

    root = tmp_path / "data"
    assert main(["make-demo-data", str(root), "--patients", "20", "--image-size", "32",
                 "--seed", "3", "--atypical", "0.5"]) == 0
    cohort = build_cohort(20, seed=3, atypical=0.5)
    term_of = {subject: p.detail.term for subject, p in cohort.patients.items()}
    assert len(set(term_of.values())) == 20 and not set(term_of.values()) & vocabulary()
    assert (root / "split.csv").read_text().splitlines()[0] == \
        "subject_id,study_id,dicom_id,edeme_severity,fold"  # the split never says who is atypical
    split = formats.read_split(root / "split.csv")
    subject_of = split.drop_duplicates("study_id").set_index("study_id")["subject_id"]
    reports = formats.read_reports(root / "all_data.tsv")
    for row in reports.itertuples():
        words = set(row.text.split())
        assert {s for s, term in term_of.items() if term in words} == {subject_of[row.study_id]}
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["parameters"]["atypical"] == 0.5
    assert manifest["counts"]["atypical_patients"] == 10
    assert manifest["counts"]["content_memorable_rate"] == round(cohort.content_memorable_rate, 4)
    assert cohort.content_memorable_rate > 0
    assert parameter_differences(root, 20, 32, 3, atypical=0.5) == []
    assert parameter_differences(root, 20, 32, 3) == ["atypical 0.5 != 0.0"]
    # a manifest from before the knob records none: it was off
    del manifest["parameters"]["atypical"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert parameter_differences(root, 20, 32, 3) == []


def _lung_density(image: np.ndarray) -> float:
    h, w = image.shape
    band = image[int(0.25 * h):int(0.65 * h)]
    return float(np.r_[band[:, int(0.15 * w):int(0.40 * w)].ravel(),
                       band[:, int(0.60 * w):int(0.85 * w)].ravel()].mean())


def test_atypical_study_shows_milder_edema_and_the_patients_mark():
    off = build_cohort(40, seed=1)
    on = build_cohort(40, seed=1, atypical=0.5)
    study = next(s for s in on.studies.values() if s.findings.severity < s.true_severity)
    assert off.studies[study.study_id].findings.severity == study.true_severity

    def draw(findings) -> np.ndarray:
        spec = ImageSpec(findings=findings, patient_key=(1, 1, study.subject_id),
                         study_key=(1, 2, study.study_id), image_key=(1, 3, 0))
        return render_image(spec, 128, source="procedural").astype(np.float64)

    before = draw(off.studies[study.study_id].findings)
    unmarked = draw(replace(study.findings, detail=None))
    after = draw(study.findings)
    assert _lung_density(before) - _lung_density(unmarked) > 30  # milder edema: clearer lungs
    changed = np.abs(after - unmarked) > 20  # the mark: a small patch, nothing else
    assert 0 < changed.mean() < 0.01
    # one mark per patient, in all of the patient's studies; another patient's lies elsewhere
    details = {s.subject_id: {t.findings.detail for t in on.studies.values()
                              if t.subject_id == s.subject_id} for s in on.studies.values()}
    assert all(len(d) == 1 for d in details.values()) and None not in set().union(*details.values())
    other = next(p for p in on.patients.values() if p.subject_id != study.subject_id)
    marked = []
    for detail in (study.findings.detail, other.detail):
        canvas = np.zeros((128, 128), np.float32)
        pathology.draw_mark(canvas, detail.mark)
        marked.append(canvas > 0.05)
    assert marked[0].any() and marked[1].any() and not np.array_equal(*marked)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_atypical_refuses_bad_values(bad, tmp_path, capsys):
    import yaml

    from forgetmi.cli import build_parser
    from forgetmi.config import ConfigError
    from forgetmi.jobs.protocol import ensure_stand_in, load_protocol

    with pytest.raises(ValueError, match=r"^atypical must be a share of patients in \[0, 1\]") \
            as raised:
        build_cohort(40, seed=0, atypical=bad)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="atypical"):
        generate_dataset(tmp_path / "data", n_patients=20, image_size=32, atypical=bad)
    assert not (tmp_path / "data").exists()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["make-demo-data", "out", "--atypical", str(bad)])
    assert "argument --atypical: expected a number in [0, 1]" in capsys.readouterr().err
    experiment = {"data": {"root": str(tmp_path / "d")}}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    (tmp_path / "protocol.yaml").write_text(yaml.safe_dump(
        {"experiment": "experiment.yaml", "methods": {"n": {"method": "neggrad+"}},
         "stand_in": {"patients": 20, "image_size": 32, "atypical": bad}}))
    with pytest.raises(ConfigError, match="stand_in: atypical must be"):
        ensure_stand_in(load_protocol(tmp_path / "protocol.yaml"))
