"""``forgetmi report`` on a sweep: each trial its own row, and the trials against the swept
parameters (table and plot); hand-made sweep folders with known scores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from forgetmi.evaluation.trials import trial_id
from forgetmi.jobs.report import main
from tests.sweep_folders import sweep_run
from tests.test_report import metrics_doc, write_run

PLACE = {"config": "configs/experiments/tuning-experiment.yaml", "original": "o/s{seed}/model"}


def sweep(root: Path, trials: list[dict], seeds=(0, 1), base: float = 0.05) -> dict[str, float]:
    """One folder holding every seed: trial k scores base + 0.01·k (+0.002 per seed); returns
    each trial id's mean score."""
    means = {}
    for k, settings in enumerate(trials):
        for seed in seeds:
            params = {"method": "finetune", **settings, **PLACE, "seed": seed}
            sweep_run(root / "runs" / f"t{k}s{seed}", params, seed,
                      score=base + 0.01 * k + 0.002 * seed, ratio=0.05 + 0.01 * k)
        means[trial_id({"method": "finetune", **settings})] = \
            base + 0.01 * k + 0.001 * (len(seeds) - 1)
    return means


def test_one_swept_key_reports_every_trial_and_a_score_by_value(tmp_path, caplog, capsys):
    means = sweep(tmp_path / "sweep", [{"lr": 1e-2, "epochs": 2}, {"lr": 1e-3, "epochs": 2},
                                       {"lr": 1e-4, "epochs": 2}])
    out = tmp_path / "report"
    with caplog.at_level(logging.INFO):
        assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {r["label"] for r in report["runs"]} == {f"finetune [{t}]" for t in means}
    table = pd.read_csv(out / "by_parameter.csv")
    assert list(table.columns) == ["trial", "lr", "score", "attack_gap", "utility_gap",
                                   "attack_diff", "utility_diff", "replicates", "runs",
                                   "time_ratio"]
    assert list(table["trial"]) == sorted(means, key=means.get)       # lowest score first
    assert table["score"].tolist() == pytest.approx(sorted(means.values()))
    assert table["attack_gap"].tolist() == pytest.approx([0.6 * m for m in sorted(means.values())])
    assert table["lr"].tolist() == [1e-2, 1e-3, 1e-4] and set(table["replicates"]) == {2}
    assert table["time_ratio"].tolist() == pytest.approx([0.05, 0.06, 0.07])
    assert report["by_parameter"]["swept"] == ["lr"]
    assert [r["trial"] for r in report["by_parameter"]["rows"]] == list(table["trial"])
    markdown = (out / "report.md").read_text()
    assert "## Trials by parameter" in markdown and "| Trial | lr | Score |" in markdown
    assert "| Trial | lr | Score |" in capsys.readouterr().out            # printed too
    assert matplotlib.image.imread(out / "by_parameter.png").shape[0] > 100


def test_two_swept_keys_give_a_heat_map(tmp_path):
    trials = [{"lr": lr, "epochs": epochs} for lr in (1e-3, 3e-3) for epochs in (2, 4)]
    sweep(tmp_path / "sweep", trials)
    out = tmp_path / "report"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert list(pd.read_csv(out / "by_parameter.csv").columns[:3]) == ["trial", "lr", "epochs"]
    assert matplotlib.image.imread(out / "by_parameter.png").shape[0] > 100


def test_more_keys_and_categories_give_a_panel_each(tmp_path):
    trials = [{"preset": p, "lr": lr, "epochs": e}
              for p, lr, e in (("equal", 1e-3, 2), ("unimodal", 3e-3, 4), ("equal", 3e-3, 2))]
    sweep(tmp_path / "sweep", trials)
    out = tmp_path / "report"
    assert main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["by_parameter"]["swept"] == ["preset", "lr", "epochs"]
    assert (out / "by_parameter.png").is_file()


def test_one_folder_per_seed_is_one_sweep(tmp_path):
    """The tuning recipe's layout: a folder per seed holding the same trials."""
    for seed in (3, 4):
        for k, lr in enumerate((1e-3, 3e-3)):
            sweep_run(tmp_path / "tune" / f"s{seed}" / "runs" / f"r{k}",
                      {"method": "finetune", "lr": lr, **PLACE}, seed, score=0.1 + k)
    out = tmp_path / "report"
    assert main([str(tmp_path / "tune"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "by_parameter.csv")
    assert table["lr"].tolist() == [1e-3, 3e-3] and set(table["replicates"]) == {2}


def test_a_true_duplicate_is_still_refused(tmp_path, caplog):
    """One trial, seed and forget size in two folders would count a seed twice."""
    params = {"method": "finetune", "lr": 1e-3, **PLACE, "seed": 0}
    sweep_run(tmp_path / "sweep" / "runs" / "a", params, 0, score=0.1)
    sweep_run(tmp_path / "sweep" / "copy" / "runs" / "a", params, 0, score=0.1)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 2
    assert f"duplicate run: label 'finetune [{trial_id({'method': 'finetune', 'lr': 1e-3})}]'" \
        in caplog.text
    assert not (tmp_path / "report").exists()


def test_a_report_without_sweep_runs_is_unchanged(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    for model in ("original", "retrained", "finetune"):
        for seed in (0, 1):
            write_run(tmp_path / "runs", metrics_doc(model, model, 10, seed, rng))
    out = tmp_path / "report"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert "by_parameter" not in json.loads((out / "report.json").read_text())
    assert not (out / "by_parameter.csv").exists() and not (out / "by_parameter.png").exists()
    assert "Trials by parameter" not in (out / "report.md").read_text()
