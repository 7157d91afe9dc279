"""``forgetmi forget``: requests, verdicts, purging, audit records, history, and privacy."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from forgetmi.data import formats
from forgetmi.errors import CacheError
from forgetmi.jobs.forget import history_main
from forgetmi.jobs.forget import main as forget_main
from forgetmi.jobs.train import main as train_main
from tests.originals import TINY

COMMON = [*TINY, "--checkpoint_every=1000"]


@pytest.fixture
def hospital(tmp_path_factory):
    """A private stand-in dataset per test (purging changes its caches for good) and a model
    trained on it."""
    from forgetmi.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("hospital")
    paths = generate_dataset(root / "data", n_patients=40, image_size=64, seed=3, workers=1)
    assert train_main([f"--data.root={paths.root}", f"--output_dir={root / 'original'}", *COMMON,
                       "--epochs=2", "--lr=1e-3"]) == 0
    split = formats.read_split(paths.split)
    training = split[split["fold"] != "TEST"]["subject_id"].drop_duplicates().tolist()
    test = split[split["fold"] == "TEST"]["subject_id"].drop_duplicates().tolist()
    return {"paths": paths, "root": root, "train_patients": training, "test_patients": test,
            "split": split}


def request(h, workspace, patients, *extra, first=False):
    args = ["--workspace", str(workspace), "--config", str(h["root"] / "original" / "config.yaml"),
            "--patients", *map(str, patients), "--epochs=2", "--lr=1e-3", "--bootstrap", "20",
            *extra]
    if first:
        args += ["--model", str(h["root"] / "original" / "model")]
    return forget_main(args)


def test_sequential_requests_purge_and_audit(hospital, tmp_path, caplog, capsys):
    h, ws = hospital, tmp_path / "ws"
    first, second = h["train_patients"][:2], h["train_patients"][2:4]
    assert request(h, ws, first, "--max-member-probability", "1.0", first=True) == 0
    log = [json.loads(x) for x in (ws / "requests.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["complete"] and log[0]["request"] == 1
    audit = log[0]
    original = h["root"] / "original" / "model" / "model.safetensors"
    assert audit["model_before_sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()
    assert audit["model_after_sha256"] != audit["model_before_sha256"]
    # salted: not the plain hash of an id
    plain = {hashlib.sha256(str(p).encode()).hexdigest() for p in first}
    assert len(audit["patient_hashes"]) == 2 and not plain & set(audit["patient_hashes"])
    rows = h["split"][h["split"]["subject_id"].isin(first)]
    images = [p for p in audit["purged"] if p["kind"] == "decoded images"]
    assert images and all(p["rows"] == len(rows) for p in images)
    # the attack on the model before the unlearning and after it, on the same rows
    for when in ("before", "after"):
        figures = audit["attack"][when]
        assert 0 <= figures["forget_vs_unseen_auc"] <= 1 and figures["unseen"] == "test", figures
        assert 0 <= figures["member_probability"] <= 1, figures
    assert audit["attack"]["after"]["member_probability"] == audit["metrics"]["member_probability"]
    assert audit["attack"]["before"] != audit["attack"]["after"]
    # the patient lists are kept: the request's, and the workspace's of every forgotten patient
    # (what later jobs leave out)
    assert audit["exclude"] == str(ws / "forgotten.csv")
    assert set(formats.read_forget_set(ws / "forgotten.csv")["dicom_id"]) == set(rows["dicom_id"])
    # the purged rows are zero on disk and refused on reading
    from forgetmi.data.cache import ImageCache
    cache = ImageCache.open(h["paths"].root / "cache" / images[0]["cache"])
    position = cache.index_of(rows["dicom_id"].iloc[0])
    assert not np.asarray(cache.array[position]).any()
    with pytest.raises(CacheError, match="forgotten patient"):
        cache.get(position)
    folder = next((ws / "requests").iterdir())
    summary = (folder / "summary.txt").read_text()
    assert "COMPLETE" in summary and f"--data.exclude={ws / 'forgotten.csv'}" in summary
    assert f"AUC {audit['attack']['before']['forget_vs_unseen_auc']:.3f} -> " in summary
    assert set(formats.read_forget_set(folder / "patients.csv")["subject_id"]) == set(first)

    # the second request starts from the first's model and leaves the first's patients out
    caplog.clear()
    assert request(h, ws, second, "--max-member-probability", "1.0") == 0
    log = [json.loads(x) for x in (ws / "requests.jsonl").read_text().splitlines()]
    assert log[1]["request"] == 2 and log[1]["model_before"] == log[0]["model_after"]
    assert f"excluded {len(rows)} rows of 2 patients" in caplog.text
    caplog.clear()
    capsys.readouterr()
    assert history_main([str(ws)]) == 0
    table = capsys.readouterr().out                  # the command's output, on stdout
    assert "#1 " in table and "#2 " in table and "#1" not in caplog.text

    # privacy: no raw patient id and no report sentence in anything written or logged
    reports = formats.read_reports(h["paths"].reports)
    forgotten = h["split"][h["split"]["subject_id"].isin(first + second)]
    sentences = {s.strip() for t in reports[reports["study_id"].isin(forgotten["study_id"])]["text"]
                 for s in str(t).split(".") if len(s.strip()) >= 20}
    lists = ("patients.csv", "forgotten-before.csv", "forgotten.csv")   # the data: named
    written = "".join(p.read_text(errors="ignore") for p in ws.rglob("*")
                      if p.is_file() and p.suffix in (".json", ".jsonl", ".txt", ".yaml", ".csv")
                      and p.name not in lists)
    for text in (written, caplog.text, table):
        assert not any(str(p) in text for p in first + second)
        assert not any(s in text for s in sentences)

    assert set(formats.read_forget_set(ws / "forgotten.csv")["subject_id"]) == set(first + second)

    # later jobs on the data: refused at their start, in one line naming the list to leave
    # out, before anything is written
    caplog.clear()
    assert train_main([f"--data.root={h['paths'].root}", f"--output_dir={tmp_path / 'later'}",
                       *COMMON, "--epochs=1"]) == 2
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert error.startswith("4 patient(s) of this run's data were forgotten by a request")
    assert error.endswith(f"leave them out with --data.exclude={ws / 'forgotten.csv'}"), error
    assert not (tmp_path / "later").exists()
    # a workspace that does not know of these requests cannot unlearn from data holding them;
    # with the list left out, it can
    caplog.clear()
    other = tmp_path / "other"
    assert request(h, other, h["train_patients"][6:7], first=True) == 2
    assert f"--data.exclude={ws / 'forgotten.csv'}" in caplog.text
    assert request(h, other, h["train_patients"][6:7], "--max-member-probability", "1.0",
                   f"--data.exclude={ws / 'forgotten.csv'}", first=True) == 0
    [folder] = (other / "requests").iterdir()
    left_out = formats.read_forget_set(folder / "forgotten-before.csv")
    assert set(left_out["subject_id"]) == set(first + second)


def test_incomplete_request_is_said_and_retried(hospital, tmp_path, caplog, monkeypatch):
    # a workspace given relative to the working directory
    monkeypatch.chdir(tmp_path)
    h, ws = hospital, "ws"
    patients = h["train_patients"][5:6]
    assert request(h, ws, patients, "--max-member-probability", "0.0", first=True) == 1
    assert "INCOMPLETE" in caplog.text
    ws = tmp_path / "ws"
    [entry] = [json.loads(x) for x in (ws / "requests.jsonl").read_text().splitlines()]
    assert not entry["complete"] and entry["purged"] == [] and entry["exclude"] is None
    assert not (ws / "forgotten.csv").exists()                    # nobody forgotten yet
    [run] = (ws / "requests").glob("*/attempt-1")
    forget_set = yaml.safe_load((run / "config.yaml").read_text())["data"]["forget_set"]
    assert forget_set == str(run.parent / "patients.csv")          # absolute: found from anywhere
    monkeypatch.chdir(h["root"])                                  # from elsewhere, relative
    assert request(h, os.path.relpath(ws), patients, "--max-member-probability", "1.0",
                   first=True) == 0
    log = [json.loads(x) for x in (ws / "requests.jsonl").read_text().splitlines()]
    assert [e["request"] for e in log] == [1, 1] and [e["attempt"] for e in log] == [1, 2]
    assert log[1]["complete"]


def test_bad_requests(hospital, tmp_path, caplog):
    h, ws = hospital, tmp_path / "ws"
    assert request(h, ws, [123456789], first=True) == 2
    assert "1 requested patient(s) are not in the split (request item(s) 1)" in caplog.text
    assert request(h, ws, [h["train_patients"][0], h["test_patients"][0]], first=True) == 2
    assert "in the TEST fold (request item(s) 2)" in caplog.text
    csv = tmp_path / "request.csv"
    pd.DataFrame({"subject_id": [str(h["train_patients"][0]), "p-1"]}).to_csv(csv, index=False)
    assert forget_main(["--workspace", str(ws), "--config",
                        str(h["root"] / "original" / "config.yaml"), "--request", str(csv)]) == 2
    assert "request.csv line 3: expected a numeric patient id" in caplog.text
    assert request(h, ws, [h["train_patients"][0]]) == 2         # no model for a first request
    assert "--model" in caplog.text
    assert not any(str(p) in caplog.text for p in h["train_patients"] + h["test_patients"])
