"""``forgetmi select``: each method's settings from its evaluated sweep, on hand-made sweep folders
of both layouts (one folder per seed; one folder holding every seed and forget size)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from forgetmi.evaluation.trials import trial_id
from forgetmi.jobs.protocol import expand, load_protocol
from forgetmi.jobs.select import main
from tests.sweep_folders import sweep_run

REPO = Path(__file__).resolve().parents[1]
PLACE = {"config": "configs/experiments/tuning-experiment.yaml",
         "original": "runs/tuning/original/{size}/s{seed}/model", "checkpoint_every": 100000}


def finetune(lr: float, epochs: int = 2) -> dict:
    return {"method": "finetune", "epochs": epochs, "lr": lr, **PLACE}


@pytest.fixture
def per_seed(tmp_path) -> Path:
    """The tuning recipe's layout: SWEEP/s<seed>/runs/<id>/, the same trials on each seed."""
    sweep = tmp_path / "tune" / "finetune"

    def run(seed, name, params, **kw):
        return sweep_run(sweep / f"s{seed}" / "runs" / name, params, seed, **kw)

    for seed in (3, 4):
        # a: close on seed 3 only; b: close on both (chosen); c: closest but over budget
        run(seed, "a", finetune(1e-3), score=0.02 if seed == 3 else 0.30)
        run(seed, "b", finetune(3e-3), score=0.07, ratio=0.08)
        run(seed, "c", finetune(1e-2), score=0.01, ratio=0.12)
    run(3, "d", finetune(1e-4), score=0.01)                        # no run on seed 4
    run(3, "f", finetune(3e-4), score=0.01)                        # died on seed 4
    run(4, "f", finetune(3e-4), state="failed")
    run(3, "g", finetune(1e-3, epochs=1), score=0.01)              # seed 4 never evaluated
    run(4, "g", finetune(1e-3, epochs=1), state="unevaluated")
    return sweep


def rows(printed: str) -> dict[str, str]:
    """The printed table's rows by trial id."""
    out = {}
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) > 2 and len(cells[1]) == 8:
            out[cells[1]] = line
    return out


def test_the_choice_is_the_closest_eligible_trial(per_seed, tmp_path, capsys):
    out = tmp_path / "presets.yaml"
    assert main([str(per_seed), "--write", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == {
        "finetune": {"method": "finetune", "epochs": 2, "lr": 3e-3}}
    table = rows(capsys.readouterr().out)
    ids = {name: trial_id({k: v for k, v in params.items() if k not in PLACE})
           for name, params in (("a", finetune(1e-3)), ("b", finetune(3e-3)),
                                ("c", finetune(1e-2)), ("d", finetune(1e-4)),
                                ("f", finetune(3e-4)), ("g", finetune(1e-3, epochs=1)))}
    assert len(table) == 6
    chosen = table[ids["b"]]
    assert chosen.startswith("| **chosen**") and "| 0.070 | 0.070 | 0.070 | 0.080 |" in chosen
    assert table[ids["a"]].startswith("| eligible") and "| 0.160 |" in table[ids["a"]]
    assert "over budget (0.120 > 0.100)" in table[ids["c"]]
    assert "no run on s4/10%" in table[ids["d"]]
    assert "failed or unfinished on s4/10%" in table[ids["f"]]
    assert "not evaluated on s4/10%" in table[ids["g"]]
    header = out.read_text().split("finetune:\n")[0]
    assert "forgetmi select" in header and "10%" in header and "s3/10%, s4/10%" in header
    assert str(per_seed) in header and ids["b"] in header
    assert not list(tmp_path.glob(".presets.yaml*"))              # written atomically


def test_a_wider_budget_admits_the_faster_trial(per_seed, tmp_path):
    out = tmp_path / "presets.yaml"
    assert main([str(per_seed), "--write", str(out), "--budget", "0.2"]) == 0
    assert yaml.safe_load(out.read_text())["finetune"]["lr"] == 1e-2


def test_one_folder_holding_every_seed_and_size(tmp_path, capsys):
    """Replicates are seeds × forget sizes seen anywhere in the sweep: a trial missing one is not
    eligible however good; the presets entry loads as a protocol's method."""
    sweep = tmp_path / "sweep"
    trials = {"x": {"preset": "equal", "lr": 3e-3}, "y": {"preset": "unimodal", "lr": 3e-3},
              "z": {"preset": "equal", "lr": 1e-2}}
    scores = {"x": 0.10, "y": 0.02, "z": 0.20}
    for name, settings in trials.items():
        for seed in (0, 1):
            for percent in (5, 10):
                if name == "y" and (seed, percent) == (1, 5):
                    continue
                params = {"method": "forgetmi", "unlearn.objective": "pull", "epochs": 2,
                          **settings, "seed": seed, "forget_set": f"forget_set_{percent}per.csv"}
                sweep_run(sweep / "runs" / f"{name}{seed}{percent}", params, seed,
                          score=scores[name] + 0.01 * seed, percent=percent)
    presets = tmp_path / "presets.yaml"
    assert main([str(sweep), "--write", str(presets)]) == 0
    printed = capsys.readouterr().out
    assert "replicates s0/5%, s0/10%, s1/5%, s1/10%" in printed
    assert "no run on s1/5%" in printed
    assert yaml.safe_load(presets.read_text()) == {"forgetmi": {
        "method": "forgetmi", "epochs": 2, "lr": 3e-3, "preset": "equal",
        "unlearn.objective": "pull"}}
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml.safe_dump({
        "experiment": str(REPO / "configs/experiments/demo.yaml"),
        "output_dir": str(tmp_path / "runs"), "seeds": [0],
        "forget_sets": {"10": "forget_set_10per.csv"}, "methods": presets.name}))
    jobs = {j.name: j for j in expand(load_protocol(protocol))}   # builds each config
    assert "--preset=equal" in jobs["unlearn/forgetmi/10/s0"].argv


def test_files_without_a_score_block_are_scored_from_their_paired_block(tmp_path, capsys):
    """Older metrics.json: the score comes from the paired differences; the time ratio is
    unknown, so only a selection without a budget can use them."""
    sweep = tmp_path / "sweep"
    for seed in (3, 4):
        sweep_run(sweep / f"s{seed}" / "runs" / "a", finetune(1e-3), seed, score=0.1,
                  legacy=True)
    assert main([str(sweep)]) == 1
    assert "time ratio unknown" in capsys.readouterr().out
    assert main([str(sweep), "--budget", "inf"]) == 0
    assert "| **chosen** | " in capsys.readouterr().out


def test_no_eligible_trial_writes_nothing_and_names_the_method(per_seed, tmp_path, caplog):
    scrub = tmp_path / "tune" / "scrub"
    sweep_run(scrub / "s3" / "runs" / "e", {"method": "scrub", "lr": 1e-3}, 3, score=0.1)
    sweep_run(scrub / "s4" / "runs" / "e", {"method": "scrub", "lr": 1e-3}, 4, state="unscored")
    out = tmp_path / "presets.yaml"
    assert main([str(per_seed), str(scrub), "--write", str(out)]) == 1
    assert f"no eligible trial for scrub ({scrub}); nothing written" in caplog.text
    assert not out.exists()


def test_an_existing_presets_file_is_replaced_only_with_force(per_seed, tmp_path, caplog):
    out = tmp_path / "presets.yaml"
    out.write_text("mine: {method: finetune}\n")
    assert main([str(per_seed), "--write", str(out)]) == 2
    assert f"{out}: exists; give --force to replace it" in caplog.text
    assert out.read_text() == "mine: {method: finetune}\n"
    assert main([str(per_seed), "--write", str(out), "--force"]) == 0
    assert list(yaml.safe_load(out.read_text())) == ["finetune"]


def test_two_sweeps_of_one_method_need_names(per_seed, tmp_path, caplog):
    other = tmp_path / "again"
    for seed in (3, 4):
        sweep_run(other / f"s{seed}" / "runs" / "a", finetune(1e-3), seed, score=0.05)
    out = tmp_path / "presets.yaml"
    assert main([str(per_seed), str(other), "--write", str(out)]) == 2
    assert "preset 'finetune' also comes from" in caplog.text and not out.exists()
    assert main([str(per_seed), str(other), "--name", "finetune", "--write", str(out)]) == 2
    assert "--name given 1 time(s) for 2 sweep folder(s)" in caplog.text
    assert main([str(per_seed), str(other), "--name", "finetune", "--name", "finetune-b",
                 "--write", str(out)]) == 0
    presets = yaml.safe_load(out.read_text())
    assert presets["finetune"]["lr"] == 3e-3 and presets["finetune-b"]["lr"] == 1e-3
    assert presets["finetune-b"]["method"] == "finetune"


@pytest.mark.parametrize("case", ["empty", "unreadable", "duplicate"])
def test_bad_sweep_folders_are_named(case, tmp_path, caplog):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    if case == "unreadable":
        run = sweep_run(sweep / "runs" / "a", finetune(1e-3), 3, score=0.1)
        (run / "metrics.json").write_text("{not json")
        expected = f"{run / 'metrics.json'}, line 1: not valid JSON"
    elif case == "duplicate":    # one trial, seed and size twice: a seed would count twice
        sweep_run(sweep / "s3" / "runs" / "a", finetune(1e-3), 3, score=0.1)
        sweep_run(sweep / "copy" / "runs" / "a", finetune(1e-3), 3, score=0.1)
        expected = "duplicate run: trial"
    else:
        expected = f"{sweep}: no sweep runs (folders with sweep_params.json) found"
    with caplog.at_level(logging.ERROR):
        assert main([str(sweep)]) == 2
    assert expected in caplog.text
