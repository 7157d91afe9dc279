"""Forget-MI partitions, the leakage audit, and forget-set selection on the real split."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from forgetmi.cli import main
from forgetmi.data import formats
from forgetmi.data.splits import (Partitions, audit_partitions, build_partitions,
                                  make_forget_sets)
from forgetmi.errors import DataError, LeakageError

SPLIT = "mimic-cxr-sub-img-edema-split-manualtest.csv"


@pytest.fixture(scope="module")
def split(reference_dir):
    return formats.read_split(reference_dir / SPLIT)


@pytest.mark.parametrize("percent", [3, 6, 10])
def test_reference_partitions(reference_dir, split, percent):
    forget = formats.read_forget_set(reference_dir / f"forget_set_{percent}per.csv")
    parts = build_partitions(split, forget, val_fraction=0.1, seed=0)
    assert set(parts.forget["dicom_id"]) == set(forget["dicom_id"])  # files list all rows
    assert len(parts.test) == 531 and parts.test["subject_id"].nunique() == 156
    assert len(parts.forget) + len(parts.retain) + len(parts.validation) + len(parts.test) == 6742
    # validation: ~10%, stratified by label, patient-disjoint from retain
    rest = len(split) - 531 - len(forget)
    assert 0.08 * rest < len(parts.validation) < 0.12 * rest
    val_share = parts.validation["severity"].value_counts(normalize=True).sort_index()
    ret_share = parts.retain["severity"].value_counts(normalize=True).sort_index()
    assert (val_share - ret_share).abs().max() < 0.03
    report = audit_partitions(parts, split)
    assert report.ok, report.to_text()
    assert report.counts["forget"]["patients"] == forget["subject_id"].nunique()


def test_forget_is_every_row_of_its_patients(split):
    patient = split[split["fold"] == "1"].groupby("subject_id").size().idxmax()
    one_row = split[split["subject_id"] == patient].head(1)
    parts = build_partitions(split, one_row)
    assert len(parts.forget) == int((split["subject_id"] == patient).sum()) > 1


def test_nested_validation_is_deterministic(split):
    a = build_partitions(split, None, seed=3).validation.index
    b = build_partitions(split, None, seed=3).validation.index
    c = build_partitions(split, None, seed=4).validation.index
    assert a.equals(b) and not a.equals(c)


def test_audit_detects_leaks(split, reference_dir):
    forget = formats.read_forget_set(reference_dir / "forget_set_3per.csv")
    parts = build_partitions(split, forget)
    leaked_row = parts.forget.iloc[[0]]
    leaky = Partitions(forget=parts.forget.iloc[1:], retain=pd.concat([parts.retain, leaked_row]),
                       validation=parts.validation, test=parts.test)
    report = audit_partitions(leaky, split)
    assert not report.ok
    failed = {c.name for c in report.checks if not c.ok}
    assert failed == {"forget patients absent from retain", "forget holds every row of its patients"}
    assert "LEAKAGE FOUND" in report.to_text()
    assert str(leaked_row["subject_id"].iloc[0]) not in report.to_text()  # counts, never ids
    with pytest.raises(LeakageError, match="forget patients absent from retain"):
        report.raise_if_failed()
    test_leak = Partitions(forget=parts.forget, retain=parts.retain, validation=parts.validation,
                           test=pd.concat([parts.test, parts.forget.iloc[[0]]]))
    assert {c.name for c in audit_partitions(test_leak).checks if not c.ok} >= {
        "forget patients absent from test", "no row in two partitions"}


def test_bad_forget_sets(split, tmp_path):
    path = tmp_path / "forget.csv"
    absent = split.head(2).copy()
    absent.loc[absent.index[1], "subject_id"] = 19999999
    with pytest.raises(DataError, match="forget patient absent from the split") as err:
        build_partitions(split, absent, forget_path=path)
    assert err.value.row == 3 and err.value.field == "subject_id" and str(path) in str(err.value)
    in_test = pd.concat([split[split["fold"] == "1"].head(1), split[split["fold"] == "TEST"].head(1)])
    with pytest.raises(DataError, match="forget patient is in the TEST fold") as err:
        build_partitions(split, in_test, forget_path=path)
    assert err.value.row == 3
    with pytest.raises(DataError, match="the forget set is empty"):
        build_partitions(split, split.iloc[0:0], forget_path=path)
    unknown_image = split.head(1).assign(dicom_id="nope")
    with pytest.raises(DataError, match="dicom_id is not in the split"):
        build_partitions(split, unknown_image, forget_path=path)


def test_make_forget_sets_like_the_reference(split):
    sets = make_forget_sets(split, (3, 6, 10), seed=0)
    for percent, rows in sets.items():
        target = round(percent / 100 * len(split))
        assert target - 5 <= len(rows) <= target
        assert "TEST" not in set(rows["fold"])
        assert (rows.groupby("subject_id").size().mean()) > 8  # biased to many-study patients
        owned = split[split["subject_id"].isin(rows["subject_id"])]
        assert len(owned) == len(rows)  # whole patients
    assert set(sets[3]["subject_id"]) < set(sets[6]["subject_id"]) < set(sets[10]["subject_id"])
    again = make_forget_sets(split, (3, 6, 10), seed=0)
    other = make_forget_sets(split, (3, 6, 10), seed=1)
    assert again[10].index.equals(sets[10].index)
    assert not other[10].index.equals(sets[10].index)


def test_reference_sets_are_nested_and_disjoint_from_test(reference_dir, split):
    ids = {p: set(formats.read_forget_set(reference_dir / f"forget_set_{p}per.csv")["subject_id"])
           for p in (3, 6, 10)}
    assert ids[3] < ids[6] < ids[10]
    assert not ids[10] & set(split.loc[split["fold"] == "TEST", "subject_id"])


def test_cli_make_forget_set_and_audit(reference_dir, tmp_path, capsys):
    assert main(["make-forget-set", "--split", str(reference_dir / SPLIT), "--seed", "7",
                 "--out", str(tmp_path)]) == 0
    written = formats.read_forget_set(tmp_path / "forget_set_10per.csv")
    assert 669 <= len(written) <= 674
    assert main(["audit", "--split", str(reference_dir / SPLIT),
                 "--forget", str(tmp_path / "forget_set_6per.csv"),
                 "--report", str(tmp_path / "audit.json")]) == 0
    out = capsys.readouterr().out
    assert "verdict: no leakage found" in out and "[FAIL]" not in out
    assert json.loads((tmp_path / "audit.json").read_text())["ok"] is True
    # a forget file with a TEST patient: one-line error, exit code 2, no traceback
    bad = tmp_path / "bad.csv"
    test_rows = formats.read_split(reference_dir / SPLIT).query("fold == 'TEST'").head(2)
    test_rows.rename(columns={"severity": "edema_severity"}).to_csv(bad, index=False)
    assert main(["audit", "--split", str(reference_dir / SPLIT), "--forget", str(bad)]) == 2


def test_holdout_drawn_like_the_forget_sets_on_the_real_split(reference_dir, split, tmp_path,
                                                             capsys, caplog):
    from forgetmi.data.splits import draw_forget_sets, side_summary

    draw = draw_forget_sets(split, (3, 6, 10), seed=0)
    forget, holdout = draw.forget_sets[10], draw.holdout
    test_patients = set(split.loc[split["fold"] == "TEST", "subject_id"])
    assert not set(holdout["subject_id"]) & (set(forget["subject_id"]) | test_patients)
    assert set(draw.forget_sets[3]["subject_id"]) <= set(draw.forget_sets[6]["subject_id"]) \
        <= set(forget["subject_id"])
    assert abs(len(holdout) - len(forget)) <= 0.02 * len(split)
    # drawn by size like the forget set: far more rows per patient than TEST's 3.4
    assert side_summary(holdout)["rows_per_patient"] > 7
    assert side_summary(forget)["rows_per_patient"] > 7
    # partitions: holdout rows in no training partition; the audit checks it
    parts = build_partitions(split, forget, holdout=holdout)
    assert len(parts.holdout) == len(holdout)
    assert not set(parts.holdout.index) & set(parts.original_train.index)
    assert audit_partitions(parts, split).ok

    # The CLI: forget sets and holdout together, or a holdout for the published forget sets.
    assert main(["make-forget-set", "--split", str(reference_dir / SPLIT), "--out",
                 str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / "holdout.csv").is_file()
    assert main(["make-forget-set", "--split", str(reference_dir / SPLIT), "--out",
                 str(tmp_path / "for-published"), "--forget",
                 str(reference_dir / "forget_set_10per.csv")]) == 0
    written = formats.read_forget_set(tmp_path / "for-published" / "holdout.csv")
    published = formats.read_forget_set(reference_dir / "forget_set_10per.csv")
    assert not set(written["subject_id"]) & set(published["subject_id"])
    assert sorted(p.name for p in (tmp_path / "for-published").iterdir()) == ["holdout.csv"]
    capsys.readouterr()
    assert main(["audit", "--split", str(reference_dir / SPLIT), "--forget",
                 str(reference_dir / "forget_set_10per.csv"), "--holdout",
                 str(tmp_path / "for-published" / "holdout.csv")]) == 0
    assert "holdout patients absent from retain" in capsys.readouterr().out


@pytest.mark.parametrize("overlap", ["forget", "TEST"])
def test_a_holdout_overlapping_forget_or_test_is_refused(reference_dir, split, tmp_path, caplog,
                                                         overlap):
    published = formats.read_forget_set(reference_dir / "forget_set_10per.csv")
    rows = (split[split["subject_id"].isin(published["subject_id"].head(1))] if
            overlap == "forget" else split.query("fold == 'TEST'").head(3))
    bad = tmp_path / "holdout.csv"
    rows.rename(columns={"severity": "edema_severity"}).to_csv(bad, index=False)
    with pytest.raises(DataError) as err:
        build_partitions(split, published, holdout=formats.read_forget_set(bad),
                         holdout_path=bad)
    message = str(err.value)
    assert str(bad) in message and "\n" not in message
    assert f"holdout patient is in the {'forget set' if overlap == 'forget' else 'TEST fold'}" \
        in message and "forgetmi make-forget-set" in message
    caplog.clear()
    assert main(["audit", "--split", str(reference_dir / SPLIT), "--forget",
                 str(reference_dir / "forget_set_10per.csv"), "--holdout", str(bad)]) == 2


def _reference_sets(reference_dir) -> dict:
    return {p: formats.read_forget_set(reference_dir / f"forget_set_{p}per.csv")
            for p in (3, 6, 10)}


def test_validation_outside_every_listed_forget_set_gives_one_original(reference_dir, split):
    from forgetmi.data.splits import audit_shared_original
    sets = _reference_sets(reference_dir)
    everyone = frozenset().union(*(set(f["subject_id"]) for f in sets.values()))
    parts = {p: build_partitions(split, f, seed=0, val_avoid=everyone) for p, f in sets.items()}
    # One validation, one set of training rows for the original, whatever the size.
    assert parts[3].validation.index.equals(parts[10].validation.index)
    assert parts[3].original_train.index.equals(parts[6].original_train.index)
    assert parts[6].original_train.index.equals(parts[10].original_train.index)
    assert not set(parts[3].validation["subject_id"]) & everyone
    for p, part in parts.items():
        report = audit_partitions(part, split)
        assert report.ok, report.to_text()
        # the retrained model of each size sees neither its forget rows nor validation's
        assert not set(part.retain.index) & (set(part.forget.index) | set(part.validation.index))
        assert len(part.validation) > 0.05 * len(part.original_train)
    assert "validation patients outside every listed forget set" in \
        {c.name for c in audit_partitions(parts[3], split).checks}
    # deterministic by seed; without the list each size carves its own validation
    again = build_partitions(split, sets[3], seed=0, val_avoid=everyone)
    assert again.validation.index.equals(parts[3].validation.index)
    assert not build_partitions(split, sets[3], seed=1, val_avoid=everyone) \
        .validation.index.equals(parts[3].validation.index)
    alone = {p: build_partitions(split, f, seed=0) for p, f in sets.items()}
    assert not alone[3].original_train.index.equals(alone[10].original_train.index)
    assert audit_shared_original(split, sets, seed=0).ok
    # a validation holding a listed forget set's patient fails the audit
    leaky = Partitions(forget=parts[3].forget, retain=parts[3].retain.iloc[:0],
                       validation=pd.concat([parts[3].validation, parts[3].retain]),
                       test=parts[3].test, val_avoided=parts[3].val_avoided)
    failed = {c.name for c in audit_partitions(leaky).checks if not c.ok}
    assert "validation patients outside every listed forget set" in failed


def test_cli_audit_checks_the_shared_original_and_refuses_a_bad_list(reference_dir, tmp_path,
                                                                    capsys):
    sets = [str(reference_dir / f"forget_set_{p}per.csv") for p in (3, 6, 10)]
    assert main(["audit", "--split", str(reference_dir / SPLIT), "--forget", sets[0],
                 "--val-avoid", *sets[1:], "--report", str(tmp_path / "audit.json")]) == 0
    out = capsys.readouterr().out
    assert "[PASS] original's training rows the same for every listed forget set: 3 forget " \
        "set(s)" in out
    assert "[PASS] validation patients outside every listed forget set" in out
    bad = tmp_path / "bad.csv"
    formats.read_split(reference_dir / SPLIT).query("fold == 'TEST'").head(2) \
        .rename(columns={"severity": "edema_severity"}).to_csv(bad, index=False)
    assert main(["audit", "--split", str(reference_dir / SPLIT), "--forget", sets[0],
                 "--val-avoid", str(bad)]) == 2
