"""Readers and validators for the Forget-MI / MIMIC-CXR file formats (SPEC §2).

Every reader returns a frame with canonical column names and dtypes and raises
:class:`~forgetmi.errors.DataError` naming the file, line and field for anything malformed.
Nothing is dropped silently. Error messages name lines, never patient identifiers.

Canonical split/forget table: ``subject_id`` (int64), ``study_id`` (int64), ``dicom_id`` (str),
``severity`` (int64, 0-3), ``fold`` (str: "1".."5" or "TEST").
Reports table: ``study_id`` (int64), ``label`` (str as written), ``text`` (str).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from forgetmi.errors import DataError

LABEL_COLUMNS = ("edeme_severity", "edema_severity")  # the release spells the split's column "edeme"
ID_COLUMNS = ("subject_id", "study_id", "dicom_id")
FOLDS = ("1", "2", "3", "4", "5", "TEST")
SEVERITIES = (0, 1, 2, 3)
TABLE_COLUMNS = ["subject_id", "study_id", "dicom_id", "severity", "fold"]
IMAGE_EXTENSIONS = (".dcm", ".jpg", ".jpeg", ".png", ".npy")


def _line(i: int) -> int:
    """File line of data row ``i`` (0-based) when line 1 is the header."""
    return i + 2


SPLIT_HEADER = "subject_id,study_id,dicom_id,edema_severity,fold"


def _unreadable(err: Exception) -> str:
    """What went wrong reading a table, in one line (a decode or tokenising error)."""
    first = (str(err).splitlines() or [type(err).__name__])[0]
    return f"not a readable UTF-8 text table ({first[:160]})"


def read_raw_csv(path: str | os.PathLike, header: str = SPLIT_HEADER) -> pd.DataFrame:
    """A CSV as text columns (header stripped), or a DataError naming the file when it is
    missing, empty, binary or malformed; ``header`` is what an empty file is told to hold."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"file is empty; expected a CSV header {header}", path) from None
    except ValueError as err:  # pandas' ParserError and UnicodeDecodeError among them
        raise DataError(_unreadable(err), path) from None
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _parse_int_column(frame: pd.DataFrame, column: str, path: Path, allowed=None) -> pd.Series:
    values = frame[column].str.strip()
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round())
    if allowed is not None:
        bad |= ~numeric.isin(allowed)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        expected = (f"one of {', '.join(map(str, allowed))}" if allowed is not None
                    else "an integer")
        raise DataError(f"expected {expected}, got {values.iloc[i]!r}"
                        f" ({int(bad.sum())} bad value(s) in this column)",
                        path, _line(i), column)
    return numeric.astype("int64")


def read_table(path: str | os.PathLike, kind: str = "split") -> pd.DataFrame:
    """Read a split CSV or a forget-set CSV (same columns; either label spelling).

    ``kind`` only changes the wording of errors ("split" or "forget set").
    """
    path = Path(path)
    raw = read_raw_csv(path)
    label = next((c for c in LABEL_COLUMNS if c in raw.columns), None)
    missing = [c for c in ID_COLUMNS + ("fold",) if c not in raw.columns]
    if label is None:
        missing.append(" or ".join(LABEL_COLUMNS))
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} in the {kind} file; "
                        f"found {', '.join(raw.columns) or 'none'}", path, 1)
    if raw.empty:
        raise DataError(f"the {kind} file has a header but no rows", path)
    for column in ("dicom_id",):
        empty = raw[column].str.strip() == ""
        if empty.any():
            raise DataError("expected a non-empty identifier", path,
                            _line(int(empty.to_numpy().nonzero()[0][0])), column)
    table = pd.DataFrame({
        "subject_id": _parse_int_column(raw, "subject_id", path),
        "study_id": _parse_int_column(raw, "study_id", path),
        "dicom_id": raw["dicom_id"].str.strip(),
        "severity": _parse_int_column(raw, label, path, allowed=SEVERITIES),
        "fold": raw["fold"].str.strip().str.upper(),
    })
    # Folds may be written "1.0" by spreadsheet round-trips; normalise before checking.
    numeric_fold = pd.to_numeric(table["fold"], errors="coerce")
    integral = numeric_fold.notna() & (numeric_fold == numeric_fold.round())
    table.loc[integral, "fold"] = numeric_fold[integral].astype("int64").astype(str)
    bad = ~table["fold"].isin(FOLDS)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"expected a fold of 1-5 or TEST, got {raw['fold'].iloc[i]!r}",
                        path, _line(i), "fold")
    duplicated = table["dicom_id"].duplicated(keep=False)
    if duplicated.any():
        rows = duplicated.to_numpy().nonzero()[0][:2]
        raise DataError(f"duplicate dicom_id (also on line {_line(int(rows[0]))}); "
                        "each image must appear once", path, _line(int(rows[1])), "dicom_id")
    folds_per_patient = table.groupby("subject_id")["fold"].nunique()
    spanning = folds_per_patient[folds_per_patient > 1]
    if len(spanning):
        i = int((table["subject_id"] == spanning.index[0]).to_numpy().nonzero()[0][-1])
        raise DataError(f"a patient spans several folds ({len(spanning)} such patient(s)); "
                        "folds must be patient-disjoint", path, _line(i), "fold")
    return table


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """The split CSV: every image-report row with its fold."""
    return read_table(path, "split")


def read_forget_set(path: str | os.PathLike) -> pd.DataFrame:
    """A forget-set CSV. Rows must also exist in the split; checked by ``splits.build_partitions``."""
    return read_table(path, "forget set")


def read_reports(path: str | os.PathLike) -> pd.DataFrame:
    """The reports TSV (``all_data.tsv``): no header; label, report id, ..., report text."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        records = _report_records(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(_unreadable(err), path) from None
    except OSError as err:
        raise DataError(f"cannot be read ({err.strerror})", path) from None
    if not records:
        raise DataError("no reports in file", path)
    frame = pd.DataFrame(records, columns=["study_id", "label", "text", "line"])
    dup = frame[frame["study_id"].duplicated(keep=False)]
    if len(dup):
        conflicting = dup.groupby("study_id")["text"].nunique()
        conflicting = conflicting[conflicting > 1]
        if len(conflicting):
            line = int(dup[dup["study_id"] == conflicting.index[0]]["line"].iloc[-1])
            raise DataError("report id appears twice with different text", path, line, "report id")
        frame = frame.drop_duplicates("study_id")  # identical copies: nothing is lost
    return frame.drop(columns="line").reset_index(drop=True)


def _report_records(path: Path) -> list[tuple[int, str, str, int]]:
    """(study id, label, text, line) of each report line of the TSV."""
    records = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, fields in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not fields or fields == [""]:
                continue
            if len(fields) < 3:
                raise DataError(f"expected at least 3 tab-separated fields (label, report id, text), "
                                f"got {len(fields)}", path, lineno)
            report_id = fields[1].strip()
            if not report_id.isdigit():
                raise DataError(f"expected a report id of digits (the study id), got {report_id!r}",
                                path, lineno, "report id")
            text = fields[-1].strip()
            if not text:
                raise DataError("empty report text", path, lineno, "text")
            records.append((int(report_id), fields[0].strip(), text, lineno))
    return records


def read_synonyms(path: str | os.PathLike) -> dict[str, str]:
    """Synonym table ``first_word,second_word,similarity,frequency``.

    Returns ``second_word -> first_word`` keeping, for each second word, the most similar first
    word (the substitution the text noise makes).
    """
    path = Path(path)
    raw = read_raw_csv(path, "first_word,second_word,similarity,frequency")
    needed = ["first_word", "second_word", "similarity"]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; found {', '.join(raw.columns)}",
                        path, 1)
    similarity = pd.to_numeric(raw["similarity"], errors="coerce")
    if similarity.isna().any():
        i = int(similarity.isna().to_numpy().nonzero()[0][0])
        raise DataError(f"expected a number, got {raw['similarity'].iloc[i]!r}",
                        path, _line(i), "similarity")
    frame = raw.assign(similarity=similarity)
    frame = frame.sort_values("similarity", ascending=False, kind="stable")
    best = frame.drop_duplicates("second_word")
    return dict(zip(best["second_word"].str.strip().str.lower(), best["first_word"].str.strip().str.lower()))


def image_relpath(subject_id: int, study_id: int, dicom_id: str, ext: str = ".dcm") -> str:
    """MIMIC-CXR layout: ``p{first two digits}/p{subject}/s{study}/{dicom}{ext}``."""
    subject = str(int(subject_id))
    return f"p{subject[:2]}/p{subject}/s{int(study_id)}/{dicom_id}{ext}"


def resolve_image_path(img_dir: str | os.PathLike, subject_id: int, study_id: int,
                       dicom_id: str, ext: str = "auto") -> Path:
    """Path of one image; ``ext="auto"`` tries .dcm, .jpg, .png, .npy in turn."""
    img_dir = Path(img_dir)
    if ext != "auto":
        return img_dir / image_relpath(subject_id, study_id, dicom_id, ext)
    for candidate in IMAGE_EXTENSIONS:
        path = img_dir / image_relpath(subject_id, study_id, dicom_id, candidate)
        if path.is_file():
            return path
    return img_dir / image_relpath(subject_id, study_id, dicom_id, ".dcm")
