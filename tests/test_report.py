"""``forgetmi report`` on hand-made metrics.json files with known numbers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from forgetmi.evaluation.report import COLUMNS
from forgetmi.jobs.report import main

HEADINGS = [c.heading for c in COLUMNS]
PERCENTS = (3, 10)
SEEDS = (0, 1, 2)
# Written in this order on purpose: the table must still read Original, Retrained, then labels
# alphabetically ("forgetmi …" before "SCRUB", case-insensitively).
MODELS = (("scrub", "SCRUB"), ("forgetmi", "forgetmi (unimodal)"),
          ("retrained", "retrained"), ("original", "original"))
ORDER = ["original", "retrained", "forgetmi (unimodal)", "SCRUB"]


def metrics_doc(model: str, label: str, percent: int | None, seed: int, rng) -> dict:
    """One run's metrics.json in the evaluate schema, with random but recorded numbers."""
    def cell(v: float) -> dict:
        return {"value": float(v), "low": float(v) - 0.05, "high": float(v) + 0.05}

    metric_names = ("auc", "f1", "accuracy")
    scores = {part: {"joint": dict(zip(metric_names, map(cell, rng.uniform(0.2, 0.9, 3))))}
              for part in ("forget", "retain", "validation", "test")}
    fpr = np.r_[0.0, np.sort(rng.uniform(0.0005, 1, 20)), 1.0]
    return {
        "schema": 1, "run": f"runs/{model}-{percent}-s{seed}", "model": model, "label": label,
        "preset": None, "forget_set": f"forget_set_{percent}per.csv", "forget_percent": percent,
        "seed": seed, "seconds": float(rng.uniform(200, 300) if model in ("original", "retrained")
                                       else rng.uniform(10, 60)),
        "seconds_kind": "training" if model in ("original", "retrained") else "unlearning",
        "metrics": scores,
        "gap": None,
        "mia": {"svc_mia_per_sample": float(rng.uniform(0.3, 0.9)),
                "svc_mia_release_per_batch32": float(rng.uniform(0.3, 0.9)),
                "svc_mia_release_n_forget_batches": 7.0,
                "population": {"auc": float(rng.uniform(0.45, 0.7)),
                               "tpr_at_1pct_fpr": float(rng.uniform(0, 0.1)),
                               "tpr_at_0.1pct_fpr": 0.0, "patient_auc": None,
                               "mia_efficacy": None, "target_member_fraction": None,
                               "roc": {"fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()}}},
        "logit_similarity": {"one_minus_cosine": float(rng.uniform(0, 0.2)), "kl_b_a": 0.1},
    }


def write_run(root: Path, doc: dict) -> Path:
    path = root / f"p{doc['forget_percent']}" / doc["model"] / f"s{doc['seed']}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def gap_to_retrained(docs: dict) -> None:
    """Record the gap block for forgetmi only: SCRUB's must be filled in from the retrained run."""
    for (model, percent, seed), doc in docs.items():
        if model == "forgetmi":
            ref = docs["retrained", percent, seed]["metrics"]["test"]["joint"]["auc"]["value"]
            doc["gap"] = {"test": {"joint": {"auc": doc["metrics"]["test"]["joint"]["auc"]["value"]
                                             - ref}}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """2 sizes × 4 models × 3 seeds; one SCRUB seed at 10% has no forget AUC."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("report")
    docs = {(model, p, s): metrics_doc(model, label, p, s, rng)
            for model, label in MODELS for p in PERCENTS for s in SEEDS}
    docs["scrub", 10, 1]["metrics"]["forget"]["joint"]["auc"]["value"] = None
    gap_to_retrained(docs)
    for doc in docs.values():
        write_run(root / "runs", doc)
    # A half-written run folder (an atomic write's hidden temporary) must not count as a seed.
    write_run(root / "runs" / ".s0.x1y2.tmp", docs["scrub", 3, 0])
    out = root / "out"
    rc = main([str(root / "runs"), "--out", str(out)])
    return rc, out, docs


def expected(docs: dict, model: str, percent: int, pick) -> np.ndarray:
    values = np.array([np.nan if pick(docs[model, percent, s]) is None
                       else pick(docs[model, percent, s]) for s in SEEDS], dtype=float)
    return values[np.isfinite(values)]


def forget_auc(doc):
    return doc["metrics"]["forget"]["joint"]["auc"]["value"]


def joint_test_auc(doc):
    return doc["metrics"]["test"]["joint"]["auc"]["value"]


def markdown_rows(text: str, size: str) -> dict[str, dict[str, str]]:
    """The table under '## Forget set: <size>' as {label: {heading: cell}}, in order."""
    block = text.split(f"## Forget set: {size}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_csv_means_and_stds_match_numpy(report):
    rc, out, docs = report
    assert rc == 0
    csv = pd.read_csv(out / "report.csv")
    assert len(csv) == 8
    assert list(csv["label"]) == ORDER * 2 and list(csv["forget_percent"]) == [3] * 4 + [10] * 4
    picks = {"forget_auc": forget_auc, "test_auc": joint_test_auc,
             "test_f1": lambda d: d["metrics"]["test"]["joint"]["f1"]["value"],
             "mia": lambda d: d["mia"]["svc_mia_per_sample"],
             "mia_batch": lambda d: d["mia"]["svc_mia_release_per_batch32"],
             "pop_tpr_1pct": lambda d: d["mia"]["population"]["tpr_at_1pct_fpr"],
             "one_minus_cos": lambda d: d["logit_similarity"]["one_minus_cosine"],
             "seconds": lambda d: d["seconds"]}
    for row in csv.to_dict("records"):
        for key, pick in picks.items():
            values = expected(docs, row["model"], row["forget_percent"], pick)
            assert row[f"{key}_mean"] == pytest.approx(values.mean()), (row["label"], key)
            assert row[f"{key}_std"] == pytest.approx(values.std(ddof=1)), (row["label"], key)
        assert row["n"] == 3
    # The null forget AUC is left out, not counted as 0: mean and std of the two defined seeds.
    scrub10 = csv[(csv["model"] == "scrub") & (csv["forget_percent"] == 10)].iloc[0]
    defined = [forget_auc(docs["scrub", 10, s]) for s in (0, 2)]
    assert scrub10["forget_auc_mean"] == pytest.approx(np.mean(defined))


def test_gap_and_time_ratio_against_the_retrained_run_of_the_same_seed(report):
    rc, out, docs = report
    csv = pd.read_csv(out / "report.csv").set_index(["forget_percent", "model"])
    for model in ("forgetmi", "scrub", "original"):  # forgetmi's gap recorded, the others derived
        for percent in PERCENTS:
            gaps = [joint_test_auc(docs[model, percent, s])
                    - joint_test_auc(docs["retrained", percent, s]) for s in SEEDS]
            ratios = [docs[model, percent, s]["seconds"] / docs["retrained", percent, s]["seconds"]
                      for s in SEEDS]
            row = csv.loc[(percent, model)]
            assert row["gap_test_auc_mean"] == pytest.approx(np.mean(gaps))
            assert row["time_ratio_mean"] == pytest.approx(np.mean(ratios))
            assert row["time_ratio_std"] == pytest.approx(np.std(ratios, ddof=1))
            assert row["time_ratio_mean"] < 1 or model == "original"
    ratios = [docs["forgetmi", 3, s]["seconds"] / docs["retrained", 3, s]["seconds"] for s in SEEDS]
    cell = markdown_rows((out / "report.md").read_text(), "3%")["forgetmi (unimodal)"]["vs retrain"]
    assert cell == f"{np.mean(ratios):.2f} ± {np.std(ratios, ddof=1):.2f}× retrain"


def test_markdown_rows_in_order_with_mean_and_std(report):
    rc, out, docs = report
    text = (out / "report.md").read_text()
    assert "look like the retrained model" in text and "lower forget scores" in text.lower()
    assert text.index("## Forget set: 3%") < text.index("## Forget set: 10%")
    for percent in PERCENTS:
        rows = markdown_rows(text, f"{percent}%")
        assert list(rows) == ORDER
        for model, label in MODELS:
            values = expected(docs, model, percent, joint_test_auc)
            assert rows[label]["Test AUC"] == f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
            assert rows[label]["n"] == "3"
            assert list(rows[label])[2:] == HEADINGS
    defined = expected(docs, "scrub", 10, forget_auc)
    assert markdown_rows(text, "10%")["SCRUB"]["Forget AUC"] == (
        f"{defined.mean():.3f} ± {defined.std(ddof=1):.3f} (n=2)")


def test_json_lists_every_input_run_found_recursively(report):
    rc, out, docs = report
    data = json.loads((out / "report.json").read_text())
    assert len(data["runs"]) == len(docs) == 24
    assert all(Path(r["path"]).name == "metrics.json" and Path(r["path"]).is_file()
               for r in data["runs"])
    assert [b["size"] for b in data["blocks"]] == ["3%", "10%"]
    row = data["blocks"][1]["rows"][3]
    assert row["label"] == "SCRUB" and row["seeds"] == [0, 1, 2]
    assert row["values"]["forget_auc"]["n"] == 2
    assert row["values"]["mia"]["mean"] == pytest.approx(
        expected(docs, "scrub", 10, lambda d: d["mia"]["svc_mia_per_sample"]).mean())


def test_plots_are_valid_pngs(report):
    rc, out, docs = report
    for name in ("tradeoff.png", "sizes.png", "mia_roc.png"):
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 10_000, name
        height, width = matplotlib.image.imread(path).shape[:2]
        assert height > 200 and width > 300, name


def test_single_seed_and_missing_blocks_show_dashes(tmp_path, caplog):
    """n=1: the mean alone; no mia/gap/similarity/seconds: '—'; the MIA plots are skipped."""
    rng = np.random.default_rng(1)
    for model, label in (("original", "original"), ("scrub", "SCRUB")):
        doc = metrics_doc(model, label, None, 0, rng)
        doc.update(mia=None, gap=None, logit_similarity=None, seconds=None, seconds_kind=None)
        write_run(tmp_path / "runs", doc)
    caplog.set_level(logging.INFO, logger="forgetmi.report")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    rows = markdown_rows((tmp_path / "out" / "report.md").read_text(), "all")
    assert list(rows) == ["original", "SCRUB"]
    scrub = tmp_path / "runs" / "pNone" / "scrub" / "s0" / "metrics.json"
    value = joint_test_auc(json.loads(scrub.read_text()))
    assert rows["SCRUB"]["Test AUC"] == f"{value:.3f}" and rows["SCRUB"]["n"] == "1"
    for heading in ("MIA", "Pop. AUC", "ΔTest AUC", "1−cos", "Time (s)", "vs retrain"):
        assert rows["SCRUB"][heading] == "—"
    assert (tmp_path / "out" / "tradeoff.png").is_file()
    assert (tmp_path / "out" / "sizes.png").is_file()  # forget AUC panel only
    assert not (tmp_path / "out" / "mia_roc.png").exists()
    assert "skipping mia_roc.png" in caplog.text


def run_failing(argv: list[str], caplog) -> str:
    caplog.set_level(logging.INFO, logger="forgetmi.report")
    assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    return errors[0]


def test_no_metrics_found(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    message = run_failing([str(tmp_path / "empty"), "--out", str(tmp_path / "out")], caplog)
    assert "no metrics.json found" in message and str(tmp_path / "empty") in message
    assert not (tmp_path / "out").exists()


def test_invalid_json_names_the_file(tmp_path, caplog):
    good = write_run(tmp_path, metrics_doc("scrub", "SCRUB", 3, 0, np.random.default_rng(0)))
    bad = tmp_path / "broken" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text('{"model": "scrub",\n "label": }')
    message = run_failing([str(good), str(tmp_path / "broken")], caplog)
    assert str(bad) in message and "not valid JSON" in message and "line 2" in message


def test_missing_metrics_field_names_file_and_field(tmp_path, caplog):
    doc = metrics_doc("scrub", "SCRUB", 3, 0, np.random.default_rng(0))
    del doc["metrics"]
    path = write_run(tmp_path, doc)
    message = run_failing([str(tmp_path)], caplog)
    assert str(path) in message and "field 'metrics'" in message


def test_duplicate_runs_name_both_files(tmp_path, caplog):
    doc = metrics_doc("scrub", "SCRUB", 3, 0, np.random.default_rng(0))
    first = write_run(tmp_path / "a", doc)
    second = write_run(tmp_path / "b", doc)
    message = run_failing([str(tmp_path / "a"), str(tmp_path / "b")], caplog)
    assert "duplicate run" in message and str(first) in message and str(second) in message


def test_time_ratio_compares_device_seconds_across_world_sizes(tmp_path):
    """Unlearning on 1 process for 50 s vs retraining on 4 for 100 s: 50 / 400 device-seconds."""
    from types import SimpleNamespace

    from forgetmi.evaluation.evaluate import describe

    rng = np.random.default_rng(3)
    for model, label, seconds, world in (("retrained", "retrained", 100.0, 4),
                                         ("scrub", "SCRUB", 50.0, 1)):
        doc = metrics_doc(model, label, 3, 0, rng)
        doc.update(seconds=seconds, world_size=world)
        write_run(tmp_path / "runs", doc)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    csv = pd.read_csv(tmp_path / "out" / "report.csv").set_index("model")
    assert csv.loc["scrub", "time_ratio_mean"] == pytest.approx(50.0 / 400.0)
    assert csv.loc["retrained", "seconds_mean"] == pytest.approx(100.0)  # wall time as recorded
    legend = {c["key"]: c["description"]
              for c in json.loads((tmp_path / "out" / "report.json").read_text())["columns"]}
    assert "world size" in legend["time_ratio"]
    # evaluate carries the engine's world size (timing.json) into metrics.json
    run = tmp_path / "unlearn-run"
    run.mkdir()
    (run / "timing.json").write_text(json.dumps({"job": "unlearn", "train_seconds": 12.5,
                                                 "world_size": 2}))
    cfg = SimpleNamespace(unlearn=SimpleNamespace(method="scrub", preset="equal"),
                          data=SimpleNamespace(forget_set="forget_set_3per.csv"), seed=1)
    described = describe(run, cfg)
    assert described["seconds"] == 12.5 and described["world_size"] == 2


# --- the headline: forget-vs-unseen attack AUC, and which model is closest to retraining ----------

HEADLINE = {"original": 0.80, "retrained": 0.52, "forgetmi": 0.55, "scrub": 0.66}


def with_headline(doc: dict, auc: float, width: float = 0.04) -> dict:
    doc["mia"]["forget_vs_unseen"] = {"auc": auc, "low": auc - width, "high": auc + width,
                                      "n_forget": 201, "n_unseen": 201, "n_boot": 1000}
    return doc


def headline_runs(root: Path, seeds=SEEDS, models=MODELS, values=HEADLINE) -> dict:
    rng = np.random.default_rng(11)
    docs = {}
    for model, label in models:
        for seed in seeds:
            doc = with_headline(metrics_doc(model, label, 3, seed, rng),
                                values[model] + 0.01 * seed)
            docs[model, seed] = doc
            write_run(root, doc)
    return docs


def test_headline_column_gaps_and_closest_model(tmp_path):
    docs = headline_runs(tmp_path / "runs")
    ulira = {"log_ratio": {"frac_above_0": 0.375}, "n_rows": 201}
    (tmp_path / "runs" / "p3" / "scrub" / "s0" / "ulira.json").write_text(json.dumps(ulira))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    rows = markdown_rows(text, "3%")
    assert list(rows["SCRUB"])[2] == "Forget-vs-unseen AUC"  # first after Model and n
    auc = [HEADLINE["scrub"] + 0.01 * s for s in SEEDS]
    assert rows["SCRUB"]["Forget-vs-unseen AUC"] == (
        f"{np.mean(auc):.3f} ± {np.std(auc, ddof=1):.3f}")
    assert rows["SCRUB"]["ΔFvU AUC"] == "+0.140 ± 0.000"  # the same offset every seed
    assert rows["retrained"]["ΔFvU AUC"] == "+0.000 ± 0.000"
    assert rows["original"]["ΔFvU AUC"] == "+0.280 ± 0.000"
    assert rows["SCRUB"]["U-LiRA"] == "0.375 (n=1)" and rows["original"]["U-LiRA"] == "—"
    csv = pd.read_csv(tmp_path / "out" / "report.csv").set_index("model")
    for key, pick in (("gap_forget_auc", forget_auc),
                      ("gap_forget_f1", lambda d: d["metrics"]["forget"]["joint"]["f1"]["value"]),
                      ("gap_test_auc", joint_test_auc)):
        gaps = [pick(docs["scrub", s]) - pick(docs["retrained", s]) for s in SEEDS]
        assert csv.loc["scrub", f"{key}_mean"] == pytest.approx(np.mean(gaps)), key
    # closest: forgetmi (|Δ| 0.03), then SCRUB (0.14), then the original (0.28)
    test_gap = np.mean([abs(joint_test_auc(docs["forgetmi", s])
                            - joint_test_auc(docs["retrained", s])) for s in SEEDS])
    assert ("- Forget set 3%: the model closest to the retrained one is **forgetmi (unimodal)** "
            f"(mean |ΔFvU AUC| 0.030, mean |ΔTest AUC| {test_gap:.3f}, over 3 seed(s)); then "
            "SCRUB (0.140); then original (0.280).") in text
    assert "first by the mean over seeds of |forget-vs-unseen AUC" in text
    assert text.index("## Closest to the retrained model") < text.index("## Forget set: 3%")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["headline"] == "fvu_auc" and "then by the mean of |test AUC" in \
        data["closeness_definition"]
    (entry,) = data["closest_to_retrained"]
    assert entry["closest"] == "forgetmi (unimodal)" and entry["model"] == "forgetmi"
    assert [r["label"] for r in entry["ranking"]] == ["forgetmi (unimodal)", "SCRUB", "original"]
    assert entry["ranking"][0]["mean_abs_gap_fvu_auc"] == pytest.approx(0.03)
    assert entry["ranking"][0]["mean_abs_gap_test_auc"] == pytest.approx(test_gap)


def test_closest_ties_on_the_headline_break_on_the_test_auc_gap(tmp_path):
    models = (("retrained", "retrained"), ("scrub", "SCRUB"), ("forgetmi", "forgetmi"))
    docs = headline_runs(tmp_path / "runs", seeds=(0,), models=models,
                         values={"retrained": 0.52, "scrub": 0.55, "forgetmi": 0.49})
    reference = joint_test_auc(docs["retrained", 0])
    docs["scrub", 0]["metrics"]["test"]["joint"]["auc"]["value"] = reference - 0.01
    docs["forgetmi", 0]["metrics"]["test"]["joint"]["auc"]["value"] = reference - 0.10
    for doc in docs.values():
        write_run(tmp_path / "runs", doc)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["closest_to_retrained"]
    assert [r["label"] for r in entry["ranking"]] == ["SCRUB", "forgetmi"]  # both |Δ| = 0.030
    assert entry["ranking"][0]["mean_abs_gap_test_auc"] == pytest.approx(0.01)
    # one seed: the headline cell shows that run's 95% interval
    rows = markdown_rows((tmp_path / "out" / "report.md").read_text(), "3%")
    assert rows["SCRUB"]["Forget-vs-unseen AUC"] == "0.550 [0.510, 0.590]"


def test_without_a_retrained_run_the_report_cannot_judge_closeness(tmp_path, caplog):
    headline_runs(tmp_path / "runs", models=(("original", "original"), ("scrub", "SCRUB")))
    caplog.set_level(logging.INFO, logger="forgetmi.report")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    sentence = ("Forget set 3%: cannot judge which model is closest to the retrained one: there "
                "is no retrained run at this forget size.")
    assert f"- {sentence}" in (tmp_path / "out" / "report.md").read_text()
    assert sentence in caplog.text
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["closest_to_retrained"]
    assert entry["closest"] is None and entry["ranking"] == []
    assert entry["reason"] == "there is no retrained run at this forget size"
    rows = markdown_rows((tmp_path / "out" / "report.md").read_text(), "3%")
    assert rows["SCRUB"]["ΔFvU AUC"] == "—" and rows["SCRUB"]["Forget-vs-unseen AUC"] != "—"


def test_the_tables_go_to_stdout_without_timestamps_even_with_quiet(report, tmp_path):
    """`forgetmi -q report RUNS | grep SCRUB`: the tables are the output, not log lines."""
    import os
    import re
    import subprocess
    import sys

    _, out, _ = report
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "forgetmi.cli", "-q", "report",
                           str(out.parent / "runs"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"{len(MODELS) * len(PERCENTS) * len(SEEDS)} runs"
    assert any(line.startswith("| Model | n | ") for line in lines)
    scrub = [line for line in lines if "SCRUB" in line]
    assert scrub and all(line.startswith("| SCRUB") for line in scrub), scrub
    assert not any(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines)
    assert "INFO" not in done.stderr                    # -q: the log says nothing


def test_a_rerun_replaces_its_own_report_and_nothing_else(report, tmp_path, caplog):
    """The report's files replace an earlier report's (a protocol reruns it); a folder holding
    someone's own report.md, or an existing --record file, is refused before anything is read,
    untouched, unless --force."""
    rc, out, _ = report
    assert rc == 0
    runs = out.parent / "runs"
    assert main([str(runs), "--out", str(out)]) == 0          # its own earlier report
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    caplog.clear()
    assert main([str(runs), "--out", str(mine)]) == 2
    assert (mine / "report.md").read_text() == "my notes\n"
    assert not (mine / "report.json").exists()
    assert "was not written by this command" in caplog.text and "--force" in caplog.text
    assert main([str(runs), "--out", str(mine), "--force"]) == 0
    assert (mine / "report.md").read_text().startswith("# Unlearning report")
    kept = tmp_path / "figures.json"
    kept.write_text("{}")
    assert main([str(runs), "--out", str(out), "--record", str(kept)]) == 2
    assert kept.read_text() == "{}"
