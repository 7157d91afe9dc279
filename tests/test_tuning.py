"""Tuning: every method's sweep has the same budget and runs on the tuning stand-in only, and the
chosen settings are what the benchmark and the demo run (the choice itself: test_select.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from forgetmi.config import ExperimentConfig, load_config
from forgetmi.jobs.demo import UNLEARNING
from forgetmi.hpc.sweep import expand, load_sweep
from forgetmi.jobs.protocol import expand as expand_protocol
from forgetmi.jobs.protocol import load_protocol
from forgetmi.config import resolve_run_path
from forgetmi.unlearning import METHODS

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "configs/experiments"
SWEEPS = sorted((REPO / "configs/sweeps/tune").glob("*.yaml"))
PRESETS = REPO / "configs/presets/tuned.yaml"
TRIALS = 8


def test_every_registered_method_has_a_tuning_sweep():
    assert sorted(p.stem for p in SWEEPS) == sorted(METHODS)


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_tuning_sweep_has_the_shared_budget_on_the_tuning_stand_in(sweep_file, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(REPO)  # the sweep's paths are the repository's, as a run resolves them
    sweep = load_sweep(sweep_file)
    state = random.getstate()
    runs = expand(sweep, tmp_path, proposal_seed=0)
    assert random.getstate() == state                      # the caller's generator untouched
    # every trial runs on both seeds (replicates), and scores itself against that seed's
    # retrained model
    assert len(runs) == 2 * TRIALS and len({r.run_id for r in runs}) == 2 * TRIALS
    trials = {}
    for run in runs:
        trials.setdefault(run.trial, set()).add(run.config.seed)
    assert len(trials) == TRIALS and all(seeds == {3, 4} for seeds in trials.values())
    tuning = load_config(ExperimentConfig, EXPERIMENTS / "evidence/experiment.yaml")
    benchmark = load_config(ExperimentConfig, EXPERIMENTS / "benchmark-experiment.yaml")
    for run in runs:
        cfg, seed = run.config, run.config.seed
        assert cfg.unlearn.method == sweep_file.stem
        assert cfg.data.root == tuning.data.root != benchmark.data.root
        assert resolve_run_path(cfg.unlearn.original, cfg) == \
            f"runs/evidence/tuning/original/s{seed}/model"
        assert resolve_run_path(cfg.evaluate.retrained, cfg) == \
            f"runs/evidence/tuning/retrained/6/s{seed}"
    assert sweep.config["metric"] == {"name": "score", "goal": "minimize"}


# The same search for every method: method, trial count, learning-rate range and replicates.
SHARED = {"method": "random", "run_cap": TRIALS}
SHARED_PARAMETERS = {
    "lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-2},
    "seed": {"values": [3, 4]},
    "config": {"value": "configs/experiments/evidence/experiment.yaml"},
    "evaluate.bootstrap": {"value": 300},
}
# Settings a method reads that its sweep fixes on purpose: alternative spellings of what is
# searched, or a variant the paper does not use.
FIXED = {
    "unlearn.preset": "the base the four weight_* replace",
    "unlearn.weights": "the four weight_* are searched one by one",
    "unlearn.retention_cap": "the release's retention hinge, not the paper's method",
}


def own_settings(name: str) -> set[str]:
    """Every config key method ``name`` reads beyond the engine's: its registry ``settings``
    expanded to leaf fields, plus the noise of the noisy copy for methods that use one."""
    import dataclasses

    from forgetmi.config import UnlearnConfig

    cls, defaults = METHODS[name], UnlearnConfig()
    keys = set()
    for setting in cls.settings:
        value = getattr(defaults, setting)
        if dataclasses.is_dataclass(value):
            keys |= {f"unlearn.{setting}.{f.name}" for f in dataclasses.fields(value)}
        else:
            keys.add(f"unlearn.{setting}")
    if cls.uses_noisy_forget:
        keys |= {"noise.image_std", "noise.text_level"}
    return keys - set(FIXED)


def _searched(spec: dict) -> bool:
    return "distribution" in spec or len(spec.get("values", [])) > 1


@pytest.mark.parametrize("sweep_file", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_method_searches_the_same_space_and_all_of_its_own_settings(sweep_file):
    config = yaml.safe_load(sweep_file.read_text())
    assert {k: config.get(k) for k in SHARED} == SHARED
    parameters = config["parameters"]
    assert {k: parameters.get(k) for k in SHARED_PARAMETERS} == SHARED_PARAMETERS
    epochs = parameters["epochs"]       # the cap is the method's time budget (file header)
    assert epochs["distribution"] == "int_uniform" and epochs["min"] == 1
    own = own_settings(sweep_file.stem)
    searched = {k for k, spec in parameters.items() if _searched(spec)}
    assert own - searched == set(), "settings of the method left at their defaults"
    assert searched - own - {"lr", "epochs", "seed"} == set(), "searches what it does not read"


def test_tuning_protocol_is_the_benchmark_recipe_on_other_data():
    tuning = yaml.safe_load((EXPERIMENTS / "tuning.yaml").read_text())
    benchmark = yaml.safe_load((EXPERIMENTS / "benchmark.yaml").read_text())
    assert tuning["train"] == benchmark["train"]
    assert tuning["forget_sets"] == benchmark["forget_sets"]
    assert {k: v for k, v in tuning["stand_in"].items() if k != "seed"} == \
        {k: v for k, v in benchmark["stand_in"].items() if k != "seed"}
    assert tuning["stand_in"]["seed"] != benchmark["stand_in"].get("seed", 0)
    assert not set(tuning["seeds"]) & set(benchmark["seeds"])
    jobs = expand_protocol(load_protocol(EXPERIMENTS / "tuning.yaml"))
    assert sorted(j.name for j in jobs if j.stage < 2) == [
        "original/s3", "original/s4", "retrained/10/s3", "retrained/10/s4"]


def test_the_benchmark_and_the_demo_run_the_tuned_settings():
    presets = yaml.safe_load(PRESETS.read_text())
    assert sorted(presets) == sorted(METHODS)
    assert all(settings["method"] == name for name, settings in presets.items())
    assert UNLEARNING == presets
    benchmark = load_protocol(EXPERIMENTS / "benchmark.yaml")
    assert benchmark.methods == presets
    jobs = {j.name: j for j in expand_protocol(benchmark)}
    for name in presets:                       # each preset builds a valid unlearning config
        assert f"unlearn/{name}/10/s0" in jobs


def test_the_demo_borrows_the_benchmarks_measured_margins():
    """configs/presets/margins.yaml is what `forgetmi report --write-margins` measured on the
    benchmark; the demo (one seed, no spread of its own) decides with the same numbers."""
    from forgetmi.evaluation.verdicts import parse_margins
    from forgetmi.jobs.demo import demo_margins

    measured = parse_margins(str(REPO / "configs" / "presets" / "margins.yaml"))
    used = demo_margins()
    assert (used.attack, used.test) == (measured.attack, measured.test)
    assert "3 seeds" in measured.source and "3 seeds" in used.source
