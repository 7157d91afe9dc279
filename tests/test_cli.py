"""The data commands and the demo, run in-process as a user would run them."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from forgetmi.cli import main
from forgetmi.data import formats


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    handler_records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            handler_records.append(self.format(record))

    collector = Collect()
    logging.getLogger("forgetmi").addHandler(collector)
    try:
        code = main(["demo", "--out", str(out), "--patients", "40", "--image-size", "96",
                     "--workers", "1", "--train-image-size", "64", "--epochs", "2"])
    finally:
        logging.getLogger("forgetmi").removeHandler(collector)
    assert code == 0
    return out, "\n".join(handler_records)


def test_demo_summary(demo_run):
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    split = formats.read_split(out / "data" / "split.csv")
    assert summary["rows"] == len(split) and summary["patients"] == split["subject_id"].nunique()
    assert set(summary["forget_sets"]) == {"3", "6", "10"}
    assert all(f["audit_ok"] for f in summary["forget_sets"].values())
    parts = summary["partitions"]
    assert sum(p["rows"] for p in parts.values()) == len(split)
    assert summary["batch_shapes"]["image"] == [8, 1, 96, 96]
    assert 0.03 < summary["noisy_forget"]["mean_abs_image_change"] < 0.15
    assert summary["noisy_forget"]["changed_token_fraction"] > 0.05
    models = summary["models"]
    from forgetmi.unlearning import METHODS
    assert set(models) == {"original", "retrained", *METHODS}
    forget_rows = summary["forget_sets"]["10"]["rows"]
    assert models["original"]["rows"]["train"] - models["retrained"]["rows"]["train"] == forget_rows
    for method in METHODS:
        assert models[method]["rows"]["retain"] == models["retrained"]["rows"]["train"]
        assert (out / method / "model" / "model.safetensors").is_file()
        assert json.loads((out / method / "metrics.json").read_text())["model"] == method
    assert models["forgetmi"]["rows"]["forget"] == forget_rows
    assert models["forgetmi"]["forget_joint_auc"] != models["original"]["forget_joint_auc"]
    # the report of all ten runs, with its plots
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["runs"]) == len(METHODS) + 2
    for name in ("report.md", "report.csv", "tradeoff.png", "sizes.png", "mia_roc.png"):
        assert (out / "report" / name).stat().st_size > 100
    assert "| forgetmi (equal) | 1 |" in (out / "report" / "report.md").read_text()
    # every unlearning run at its tuned settings (configs/presets/tuned.yaml)
    import yaml

    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.jobs.demo import UNLEARNING
    for method, settings in UNLEARNING.items():
        ran = load_config(ExperimentConfig, out / method / "config.yaml")
        assert ran == load_config(ExperimentConfig, out / method / "config.yaml",
                                  [f"--{k}={v}" for k, v in settings.items()])
    forgetmi = yaml.safe_load((out / "forgetmi" / "config.yaml").read_text())
    assert (forgetmi["train"]["epochs"], forgetmi["noise"]["image_std"],
            forgetmi["unlearn"]["preset"]) == (6, 0.3, "equal")
    for m in models.values():
        for part in ("validation", "test", "forget"):
            assert 0.0 <= m[f"{part}_joint_auc"] <= 1.0 and 0.0 <= m[f"{part}_joint_f1"] <= 1.0
    assert (out / "original" / "model" / "model.safetensors").is_file()
    assert (out / "retrained" / "config.yaml").is_file()


def test_demo_logs_no_report_text_or_patient_ids(demo_run):
    out, logs = demo_run
    assert "verdict: no leakage found" in logs and "forgetmi demo — summary" in logs
    split = formats.read_split(out / "data" / "split.csv")
    for subject in split["subject_id"].astype(str).unique():
        assert subject not in logs
    reports = formats.read_reports(out / "data" / "all_data.tsv")
    for text in reports["text"]:
        sentences = [s.strip() for s in text.split(" . ") if len(s.strip()) > 25]
        assert not any(s in logs for s in sentences)


def test_demo_reuses_its_data(demo_run, caplog):
    out, _ = demo_run
    before = (out / "data" / "manifest.json").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--patients", "40", "--image-size", "96",
                 "--workers", "1", "--epochs", "0"]) == 0
    assert (out / "data" / "manifest.json").stat().st_mtime_ns == before
    assert "reusing the stand-in dataset" in caplog.text


def test_make_demo_data_refuses_to_overwrite(demo_run, caplog):
    out, _ = demo_run
    assert main(["make-demo-data", str(out / "data"), "--patients", "10"]) == 2
    assert "overwrite" in caplog.text


def test_build_cache_and_keywords(demo_run, capsys):
    out, _ = demo_run
    root = out / "data"
    assert main(["build-cache", f"--data.root={root}", "--image_size=48"]) == 0
    assert (root / "cache" / "images-48-crop48" / "index.json").is_file()
    assert main(["keywords", str(root / "all_data.tsv"), "-k", "5"]) == 0
    words = capsys.readouterr().out.split()
    assert len(words) == 5 and len(set(words)) == 5
    assert main(["build-cache", f"--data.root={root}", "--image_sise=48"]) == 2  # typo: clear error


def test_demo_verdict_places_each_model_in_words():
    """The demo's words come from the report's equivalence test: a model whose test AUC fell
    outside the utility margin is never called a match, however low its attack AUC."""
    from forgetmi.jobs.demo import demo_margins, verdict

    margins = demo_margins()

    def model(auc, low, high, attack_diff=None, test_diff=0.0, se=0.004):
        m = {"forget_vs_unseen_auc": auc, "forget_vs_unseen_low": low,
             "forget_vs_unseen_high": high}
        m["paired"] = {"attack": [auc - 0.53 if attack_diff is None else attack_diff, se],
                       "test": [test_diff, se / 2]}
        return m
    models = {"original": model(0.74, 0.68, 0.79), "retrained": model(0.53, 0.46, 0.59),
              "eu-k": model(0.61, 0.55, 0.67), "forgetmi": model(0.72, 0.66, 0.75),
              "good": model(0.535, 0.47, 0.60), "over": model(0.40, 0.35, 0.45),
              "cf-k": model(0.75, 0.69, 0.79),
              "collapsed": model(0.53, 0.47, 0.59, test_diff=-0.156)}
    lines = verdict(models)
    assert "do not overlap" in lines[2] and "margins" in lines[3] and "one seed" in lines[3]
    said = {line.split(":")[0]: line for line in lines[4:]}
    assert "between the original and the target" in said["eu-k"] and "62% of the way" in said["eu-k"]
    assert "still remembers them" in said["forgetmi"]
    assert "equivalent to the retrained model" in said["good"]
    assert "below the target" in said["over"]
    assert "further from the retrained model than the original" in said["cf-k"]
    assert "not a match" in said["collapsed"] and f"±{margins.test:.3f}" in said["collapsed"]
    assert not any("at the target" in line for line in lines)
    models["retrained"] = model(0.66, 0.60, 0.71)   # overlapping intervals: no placement
    lines = verdict(models)
    assert "overlap" in lines[-1] and "benchmark" in lines[-1] and len(lines) == 3


def test_a_repeated_info_line_prints_once_and_says_how_often(capsys):
    """The demo loaded its data 32 times and said so 32 times: a line repeated among the
    recent ones prints once, then a count; warnings always print; -v prints every line."""
    from forgetmi.utils.logs import CollapsingHandler

    log = logging.getLogger("forgetmi.test_repeats")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = CollapsingHandler(sys.stderr)
    log.addHandler(handler)
    try:
        for _ in range(32):
            log.info("data: 1235 rows")
            log.info("loading the model")
        log.warning("disk nearly full")
        log.warning("disk nearly full")
        handler.collapse = False
        log.info("data: 1235 rows")
    finally:
        log.removeHandler(handler)
        handler.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["data: 1235 rows", "loading the model",
                     "('data: 1235 rows' repeated 31 more time(s); -v shows every line)",
                     "('loading the model' repeated 31 more time(s); -v shows every line)",
                     "disk nearly full", "disk nearly full", "data: 1235 rows"]


def test_a_job_keeps_the_command_lines_verbosity():
    """`forgetmi -q train`: the job's own setup_logging() keeps -q (it used to reset to info)."""
    from forgetmi.utils.logs import setup_logging

    forgetmi = logging.getLogger("forgetmi")
    before = forgetmi.level
    try:
        setup_logging(-1)
        setup_logging()
        assert forgetmi.level == logging.WARNING
        setup_logging(0)
        assert forgetmi.level == logging.INFO
    finally:
        forgetmi.setLevel(before)
