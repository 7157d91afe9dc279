"""A sweep's trials score themselves: the shipped bayes sweep over Forget-MI's weights and σ,
each trial at two forget sizes and two seeds, scored against the retrained model of its size
and seed into metrics.json and its W&B run's summary; the engine learns from the scores; and
the same trial under a W&B agent (two processes) scores itself into the agent's run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgetmi.config import ExperimentConfig, load_config
from forgetmi.errors import ForgetMIError
from forgetmi.hpc.sweep import REPLICATES, _finished, expand, load_sweep, trial_id
from forgetmi.jobs.status import main as status_main
from forgetmi.jobs.sweep import main as sweep_main
from forgetmi.jobs.unlearn import run_unlearning
from forgetmi.unlearning.forgetmi_method import resolve_weights
from forgetmi.utils.tracking import run_id_for
from tests.originals import BAYES_SWEEP, bayes_overrides
from tests.wandb_files import offline_runs, summary

REPO = Path(__file__).resolve().parents[1]


def _runs(out: Path) -> list[tuple[Path, dict]]:
    return [(p.parent, json.loads(p.read_text()))
            for p in sorted((out / "runs").glob("*/sweep_params.json"))]


def test_single_weights_replace_the_presets_terms():
    weights = resolve_weights("equal", None, {"uu": 1.0, "mr": None})
    assert (weights.uu, weights.ur, weights.mu, weights.mr) == (1.0, 0.25, 0.25, 0.25)
    cfg = load_config(ExperimentConfig, None, ["--preset=no-noise", "--unlearn.weight_uu=2"])
    assert cfg.unlearn.effective_objective == "pull"   # custom weights: the default objective
    with pytest.raises(ForgetMIError, match="weight_"):
        resolve_weights("equal", None, {"uu": -1.0})


def test_seeds_and_sizes_are_crossed_with_each_proposal(tmp_path):
    runs = expand(load_sweep(BAYES_SWEEP), tmp_path, count=3, proposal_seed=0)
    assert len(runs) == 3 * 2 * 2
    trials = {}
    for run in runs:
        trials.setdefault(run.trial, set()).add((run.params["seed"], run.params["forget_set"]))
    assert len(trials) == 3 and all(len(places) == 4 for places in trials.values())
    assert all(run.trial == trial_id(run.params, list(REPLICATES)) for run in runs)
    # each run's config names its own retrained model, to be filled with its size and seed
    run = runs[0]
    assert run.config.evaluate.retrained == "runs/tuning/retrained/{size}/s{seed}"


def test_a_trial_refuses_a_missing_reference_before_it_starts(demo_data, small_original,
                                                             tmp_path):
    cfg = load_config(ExperimentConfig, None, [
        f"--data.root={demo_data.root}", f"--original={small_original}",
        f"--evaluate.retrained={tmp_path / 'nowhere'}", f"--output_dir={tmp_path / 'run'}"])
    with pytest.raises(ForgetMIError, match="not a finished retraining"):
        run_unlearning(cfg)
    assert not (tmp_path / "run").exists()


def test_a_bayes_sweep_scores_every_trial_and_learns_from_the_scores(
        demo_data, sweep_references, tmp_path, caplog, capsys):
    out = tmp_path / "sweep"
    args = [str(BAYES_SWEEP), "--out", str(out), "--executor", "local", "--jobs", "2",
            "--count", "1", "--proposal-seed", "0",
            *bayes_overrides(demo_data.root, sweep_references)]
    assert sweep_main(args) == 0
    runs = _runs(out)
    assert sorted((p["seed"], p["forget_set"]) for _, p in runs) == [
        (3, "forget_set_10per.csv"), (3, "forget_set_6per.csv"),
        (4, "forget_set_10per.csv"), (4, "forget_set_6per.csv")]
    assert len({trial_id(p, list(REPLICATES)) for _, p in runs}) == 1
    scores = []
    for folder, params in runs:
        metrics = json.loads((folder / "metrics.json").read_text())
        size = params["forget_set"].split("_")[-1].replace("per.csv", "")
        reference = sweep_references / "retrained" / size / f"s{params['seed']}"
        score = metrics["score"]
        assert score["retrained"] == str(reference)
        assert score["value"] == pytest.approx(abs(metrics["paired"]["fvu_auc"]["diff"])
                                               + abs(metrics["paired"]["test_auc"]["diff"]))
        assert score["time_ratio"] is not None and score["time_ratio"] > 0
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["evaluate"]["retrained"] == str(reference)     # the folder it came from
        assert saved["unlearn"]["weight_uu"] == pytest.approx(params["unlearn.weight_uu"])
        # Two starts of one W&B run: the unlearning, then its evaluation with the score.
        started = offline_runs(folder)
        assert {r.id for r in started} == {run_id_for(folder, "unlearn", params["seed"])}
        assert {r.job_type for r in started} == {"unlearn"}
        assert started[0].group.startswith("sweep-forgetmi-bayes")
        assert all(r.group == started[0].group for r in started)
        figures = summary(started[-1].folder)
        assert figures["score"] == pytest.approx(score["value"])
        assert figures["score/attack_gap"] == pytest.approx(score["attack_gap"])
        assert figures["eval/mia/forget_vs_unseen/auc"] == \
            pytest.approx(metrics["mia"]["forget_vs_unseen"]["auc"])
        scores.append(score["value"])
    # The engine sees one finished trial, its metric the mean over the four runs.
    (history,) = _finished(out, "score", "unlearn", list(REPLICATES), 4)
    assert history.summary_metrics["score"] == pytest.approx(statistics.mean(scores))
    # The next call proposes a new trial from that history (planned here, not run: its runs
    # would be the same four as above), and the finished trial is not planned again.
    planned = expand(load_sweep(BAYES_SWEEP), out, count=1, proposal_seed=0,
                     extra=bayes_overrides(demo_data.root, sweep_references))
    assert len(planned) == 4 and len({run.trial for run in planned}) == 1
    assert planned[0].trial not in {trial_id(p, list(REPLICATES)) for _, p in runs}
    table = json.loads((out / "report" / "report.json").read_text())["by_parameter"]
    assert len(table["rows"]) == 1 and table["rows"][0]["replicates"] == 4
    assert table["rows"][0]["score"] == pytest.approx(statistics.mean(scores))
    # A rerun submits nothing: every run is finished and scored.
    before = {f: (f / "metrics.json").stat().st_mtime_ns for f, _ in runs}
    assert sweep_main([*args[:8], "0", *args[9:]]) == 0
    assert {f: (f / "metrics.json").stat().st_mtime_ns for f in before} == before
    caplog.clear()
    assert status_main([str(out)]) == 0
    assert "5 task(s): 5 done" in caplog.text + capsys.readouterr().out   # 4 runs, the report


def test_under_a_wandb_agent_a_two_process_trial_scores_itself(demo_data, sweep_references,
                                                               tmp_path):
    """As ``wandb agent`` runs the shipped file's command: node_launch, two processes, the
    agent's run id; the score lands in that run's summary."""
    params = {"method": "forgetmi", "preset": "equal", "unlearn.weight_uu": 0.7,
              "unlearn.weight_mr": 0.1, "noise.image_std": 0.2, "seed": 4,
              "forget_set": "forget_set_6per.csv"}
    args = [f"--{k}={v}" for k, v in params.items()]
    args += bayes_overrides(demo_data.root, sweep_references) + ["--batch_size=4"]
    env = {**os.environ, "WANDB_SWEEP_ID": "sw7", "WANDB_RUN_ID": "agentrun7",
           "WANDB_MODE": "offline", "FORGETMI_PROCESSES": "2", "OMP_NUM_THREADS": "1",
           "FORGETMI_SWEEP_ROOT": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "forgetmi.hpc.node_launch",
                           "launch/unlearn.py", *args], cwd=REPO, env=env, timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "sw7" / "agentrun7"
    assert json.loads((run / "timing.json").read_text())["world_size"] == 2
    score = json.loads((run / "metrics.json").read_text())["score"]
    assert score["retrained"] == str(sweep_references / "retrained" / "6" / "s4")
    started = offline_runs(run)
    assert {r.id for r in started} == {"agentrun7"} and len(started) == 2
    assert summary(started[-1].folder)["score"] == pytest.approx(score["value"])


def test_a_resubmitted_sweep_finishes_its_unfinished_trials(tmp_path):
    """A trial interrupted on one replicate is planned again (its other runs skipped as
    finished); --count 0 plans only that."""
    sweep = load_sweep(BAYES_SWEEP)
    first = expand(sweep, tmp_path, count=1, proposal_seed=0)
    for run in first:
        run.output_dir.mkdir(parents=True)
        (run.output_dir / "sweep_params.json").write_text(json.dumps(run.params))
    for run in first[:3]:   # three of its four runs finished; the fourth was cut off
        (run.output_dir / "timing.json").write_text(json.dumps({"job": "unlearn"}))
    again = expand(sweep, tmp_path, count=0)
    assert [r.run_id for r in again] == [r.run_id for r in first]
    more = expand(sweep, tmp_path, count=1, proposal_seed=1)
    assert len(more) == 8 and [r.run_id for r in more[:4]] == [r.run_id for r in first]
    with pytest.raises(Exception, match="--count"):
        expand(sweep, tmp_path, count=-1)
