"""The benchmark's signal, on its first seed: the original model remembers its forget rows
(forget-vs-unseen attack AUC clearly above 0.5, against the holdout drawn like them), the
retrained model is at chance, their intervals are apart, and there are enough unseen rows for
the attack to have power.

The stand-in and the training recipe are the shipped ones (configs/experiments/benchmark.yaml,
its ``stand_in`` and ``train`` blocks) at the demo's patients and epochs, which are the
benchmark's: a smaller stand-in (300 patients, an 18-patient holdout) could not tell.

These are the very models the README's first command (``forgetmi demo``) trains. When that
command has run in this checkout after the last change to the package and its configs (as in
CI, where it runs just before the tests) and its runs are exactly the ones this test would
train, the test evaluates those instead of training the pair a second time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgetmi.jobs.demo import DEMO
from forgetmi.jobs.protocol import ensure_stand_in, load_protocol

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "configs" / "experiments" / "benchmark.yaml"
DEMO_RUN = REPO / "forgetmi-demo"             # where README command 1 writes

pytestmark = pytest.mark.slow
CLI = "import sys; from forgetmi.cli import main; sys.exit(main(sys.argv[1:]))"


def _override(key: str, value) -> str:
    return f"--{key}={value}"


def _demo_runs(spec: dict, train_args: list[str]) -> Path | None:
    """The demo's folder when its original and retrained runs are this test's pair, made by the
    current code; else None (then the test trains its own)."""
    from forgetmi.config import ExperimentConfig, load_config, to_dict
    from forgetmi.synthetic import parameter_differences
    from forgetmi.utils.run_folder import flatten, setting_differences

    summary = DEMO_RUN / "summary.json"
    if not summary.is_file():
        return None
    made = summary.stat().st_mtime
    sources = [p for folder in ("forgetmi", "configs") for p in (REPO / folder).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    if any(p.stat().st_mtime > made for p in sources):
        return None                                   # the package changed after the demo ran
    stand_in = spec["stand_in"]
    if parameter_differences(DEMO_RUN / "data", n_patients=stand_in["patients"],
                             image_size=stand_in["image_size"], seed=stand_in.get("seed", 0),
                             test_fraction=stand_in["test_fraction"],
                             label_noise=stand_in["label_noise"]) != []:
        return None
    for mode, name in (("train", "original"), ("retrain", "retrained")):
        run = DEMO_RUN / name
        if not (run / "timing.json").is_file() or not (run / "config.yaml").is_file():
            return None
        if json.loads((run / "timing.json").read_text()).get("job") != mode:
            return None
        wanted = load_config(ExperimentConfig, spec["experiment"], train_args)
        recorded = flatten(yaml.safe_load((run / "config.yaml").read_text()))
        wanted = flatten(yaml.safe_load(yaml.safe_dump(to_dict(wanted))))
        # The rule a protocol reuses a finished run by; the data folder is the demo's own.
        if setting_differences(recorded, wanted, same=lambda key: key == "data.root"):
            return None
    return DEMO_RUN


@pytest.fixture(scope="module")
def reference_pair(tmp_path_factory):
    """The original (retain + forget) and retrained (retain) models of one seed, trained at the
    same time in two single-threaded processes (the two cores of CI), then evaluated."""
    from forgetmi.evaluation.evaluate import evaluate_run

    tmp = tmp_path_factory.mktemp("benchmark")
    spec = yaml.safe_load(BENCHMARK.read_text())
    spec["stand_in"].update(patients=DEMO["patients"], workers=1)
    spec["train"]["epochs"] = DEMO["epochs"]
    spec["experiment"] = str(BENCHMARK.parent / spec["experiment"])
    spec["methods"] = str(BENCHMARK.parent / spec["methods"])    # the presets file
    train_args = ["--seed=0", *(_override(k, v) for k, v in spec["train"].items())]
    demo = _demo_runs(spec, train_args)
    if demo is not None:
        results = {name: evaluate_run(demo / name, n_boot=300) for name in ("original", "retrained")}
        return demo, results
    data = tmp / "data"
    protocol = tmp / "benchmark.yaml"
    protocol.write_text(yaml.safe_dump(spec))
    ensure_stand_in(load_protocol(protocol), [f"--data.root={data}"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = {}
    for mode, name in (("train", "original"), ("retrain", "retrained")):
        argv = [sys.executable, "-c", CLI, mode, "--config", spec["experiment"],
                f"--data.root={data}", f"--output_dir={tmp / name}", *train_args]
        log = (tmp / f"{name}.log").open("w")
        jobs[name] = (subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (process, log) in jobs.items():
        assert process.wait(timeout=1500) == 0, (tmp / f"{name}.log").read_text()[-3000:]
        log.close()
    results = {name: evaluate_run(tmp / name, n_boot=300) for name in jobs}
    return tmp, results


def test_original_remembers_and_retrained_is_at_chance(reference_pair):
    tmp, results = reference_pair
    original = results["original"]["mia"]["forget_vs_unseen"]
    retrained = results["retrained"]["mia"]["forget_vs_unseen"]
    # enough unseen rows of unseen patients, every one of them used
    manifest = json.loads((tmp / "data" / "manifest.json").read_text())
    # the unseen side is the holdout, drawn like the forget set; TEST is the secondary one
    assert original["unseen"] == "holdout"
    assert original["n_unseen"] == manifest["counts"]["holdout"]["rows"] >= 100
    assert original["n_unseen_patients"] >= 10 and original["n_forget_patients"] >= 10
    secondary = results["original"]["mia"]["forget_vs_test"]
    assert secondary["n_unseen"] == manifest["counts"]["rows_per_fold"]["TEST"] >= 250
    # the original trained on its forget rows and still fits them better than strangers' rows
    assert original["auc"] >= 0.65 and original["low"] > 0.55, original
    # the retrained model never saw them: at chance
    assert retrained["low"] < 0.5 < retrained["high"], retrained
    assert abs(retrained["auc"] - 0.5) <= 0.07, retrained
    # and the two are told apart
    assert original["low"] > retrained["high"], (original, retrained)
    # the models are trained to convergence: the last epoch is the model
    for name in ("original", "retrained"):
        timing = json.loads((tmp / name / "timing.json").read_text())
        assert timing["model_epoch"] == DEMO["epochs"] - 1


def test_memory_shows_on_the_task_too(reference_pair):
    """What the attack sees is memory: the original scores its forget rows far above the test
    rows, the retrained model scores both alike."""
    _, results = reference_pair
    def auc(name, part):
        return results[name]["metrics"][part]["joint"]["auc"]["value"]
    assert auc("original", "forget") - auc("original", "test") > 0.1
    assert abs(auc("retrained", "forget") - auc("retrained", "test")) < 0.08
    # and both models learned the task
    assert auc("original", "test") > 0.7 and auc("retrained", "test") > 0.7
