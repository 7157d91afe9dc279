"""The real file formats: reference files read exactly, and every malformed input named precisely."""

from __future__ import annotations

import pandas as pd
import pytest

from forgetmi.data import formats
from forgetmi.errors import DataError

HEADER = "subject_id,study_id,dicom_id,edeme_severity,fold\n"
ROWS = [
    "10000001,50000001,aaaa0001-00000000-00000000-00000000-00000000,0,1",
    "10000001,50000002,aaaa0002-00000000-00000000-00000000-00000000,1,1",
    "10000002,50000003,aaaa0003-00000000-00000000-00000000-00000000,2,2",
    "10000003,50000004,aaaa0004-00000000-00000000-00000000-00000000,3,TEST",
]


def write(tmp_path, text, name="split.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reference_split_counts(reference_dir):
    split = formats.read_split(reference_dir / "mimic-cxr-sub-img-edema-split-manualtest.csv")
    assert list(split.columns) == formats.TABLE_COLUMNS
    assert len(split) == 6742
    assert split["subject_id"].nunique() == 1663
    assert split["study_id"].nunique() == 6084
    assert split["severity"].value_counts().sort_index().tolist() == [2883, 1511, 1709, 639]
    test = split[split["fold"] == "TEST"]
    assert (len(test), test["subject_id"].nunique()) == (531, 156)
    assert set(split["fold"]) == {"1", "2", "3", "4", "5", "TEST"}
    assert split["dicom_id"].is_unique


@pytest.mark.parametrize("percent,rows,patients", [(3, 201, 16), (6, 401, 32), (10, 674, 60)])
def test_reference_forget_sets(reference_dir, percent, rows, patients):
    forget = formats.read_forget_set(reference_dir / f"forget_set_{percent}per.csv")
    assert (len(forget), forget["subject_id"].nunique()) == (rows, patients)
    assert "TEST" not in set(forget["fold"])


def test_reference_synonyms(reference_dir):
    synonyms = formats.read_synonyms(reference_dir / "Synonyms.csv")
    raw = pd.read_csv(reference_dir / "Synonyms.csv")
    assert len(synonyms) == raw["second_word"].nunique()
    # the most similar first word wins for each second word
    best = raw.sort_values("similarity", ascending=False).drop_duplicates("second_word")
    row = best.iloc[0]
    assert synonyms[row["second_word"].lower()] == row["first_word"].lower()


def test_both_label_spellings(tmp_path):
    a = formats.read_split(write(tmp_path, HEADER + "\n".join(ROWS) + "\n"))
    b = formats.read_split(write(tmp_path, HEADER.replace("edeme", "edema") + "\n".join(ROWS) + "\n",
                                 "b.csv"))
    pd.testing.assert_frame_equal(a, b)
    assert a["severity"].tolist() == [0, 1, 2, 3]
    assert a["fold"].tolist() == ["1", "1", "2", "TEST"]


def test_spreadsheet_style_numbers_accepted(tmp_path):
    rows = [r.replace(",1,1", ",1.0,1.0") for r in ROWS]
    table = formats.read_split(write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    assert table["severity"].tolist() == [0, 1, 2, 3] and table["fold"].iloc[1] == "1"


@pytest.mark.parametrize("header,message", [
    ("subject_id,study_id,dicom_id,fold\n", "missing column(s) edeme_severity or edema_severity"),
    ("subject,study_id,dicom_id,edema_severity,fold\n", "missing column(s) subject_id"),
    ("subject_id,study_id,dicom_id,edema_severity,split\n", "missing column(s) fold"),
])
def test_missing_or_misnamed_columns(tmp_path, header, message):
    body = "\n".join(",".join(r.split(",")[: header.count(",") + 1]) for r in ROWS)
    path = write(tmp_path, header + body + "\n")
    with pytest.raises(DataError) as err:
        formats.read_split(path)
    assert message in str(err.value)
    assert str(path) in str(err.value) and "line 1" in str(err.value)


@pytest.mark.parametrize("bad_row,line_no,field,expected", [
    (2, 3, "fold", "expected a fold of 1-5 or TEST, got '6'"),
    (1, 2, "edeme_severity", "expected one of 0, 1, 2, 3, got '4'"),
    (3, 4, "subject_id", "expected an integer, got 'p1000'"),
])
def test_bad_values_named_by_line_and_field(tmp_path, bad_row, line_no, field, expected):
    rows = [r.split(",") for r in ROWS]
    if field == "fold":
        rows[bad_row - 1][4] = "6"
    elif field == "edeme_severity":
        rows[bad_row - 1][3] = "4"
    else:
        rows[bad_row - 1][0] = "p1000"
    path = write(tmp_path, HEADER + "\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(DataError) as err:
        formats.read_split(path)
    assert err.value.row == line_no and err.value.field == field
    assert expected in str(err.value)


def test_duplicate_dicom_ids(tmp_path):
    rows = ROWS + [ROWS[1]]
    path = write(tmp_path, HEADER + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="duplicate dicom_id \\(also on line 3\\)") as err:
        formats.read_split(path)
    assert err.value.row == 6


def test_patient_spanning_folds(tmp_path):
    rows = ROWS[:1] + [ROWS[1].replace(",1,1", ",1,3")] + ROWS[2:]
    with pytest.raises(DataError, match="spans several folds"):
        formats.read_split(write(tmp_path, HEADER + "\n".join(rows) + "\n"))


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        formats.read_split(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="file is empty"):
        formats.read_split(write(tmp_path, ""))
    with pytest.raises(DataError, match="header but no rows"):
        formats.read_forget_set(write(tmp_path, HEADER))


def test_reports_tsv(tmp_path):
    path = write(tmp_path, "0\t50000001\tno edema\n1\t50000002\textra\tmild edema\n", "r.tsv")
    reports = formats.read_reports(path)
    assert reports["study_id"].tolist() == [50000001, 50000002]
    assert reports["text"].tolist() == ["no edema", "mild edema"]  # the last column is the text
    with pytest.raises(DataError, match="line 2, field 'report id'"):
        formats.read_reports(write(tmp_path, "0\t50000001\tok\n0\ts5000\tbad\n", "r2.tsv"))
    with pytest.raises(DataError, match="line 1: expected at least 3"):
        formats.read_reports(write(tmp_path, "0\t50000001\n", "r3.tsv"))
    with pytest.raises(DataError, match="twice with different text"):
        formats.read_reports(write(tmp_path, "0\t5\ta\n0\t5\tb\n", "r4.tsv"))
    with pytest.raises(DataError, match="empty report text"):
        formats.read_reports(write(tmp_path, "0\t5\t \n", "r5.tsv"))


def test_image_layout():
    assert formats.image_relpath(10000032, 50414267, "abc", ".dcm") == "p10/p10000032/s50414267/abc.dcm"
