"""``forgetmi evaluate`` and the membership attack it runs, validated on real models.

Two models are trained on disjoint halves of the patients (A on H1, B on H2) long enough to fit
their rows. The population attack must find membership where it exists (A's rows vs H2's rows)
and nothing where it does not (two random patient halves of rows that A never saw).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from forgetmi.data import formats
from forgetmi.errors import ForgetMIError
from forgetmi.evaluation.evaluate import evaluate_run
from forgetmi.jobs.evaluate import main as evaluate_main
from forgetmi.evaluation.metrics import softmax
from forgetmi.evaluation.mia import attack_features, population_attack
from forgetmi.jobs.train import main as train_main
from tests.originals import TINY

pytestmark = pytest.mark.slow

# Long enough, without weight decay, for the models to fit their rows (train CE ≈ 0.15 against
# ≈ 1.0 on unseen rows), as an original model that memorised its patients would.
ARGS = [*TINY, "--epochs=25", "--lr=2e-3", "--weight_decay=0",
        "--checkpoint_every=10000"]


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """A 120-patient dataset, its non-test patients split in two halves, and a model per half."""
    from forgetmi.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("halves")
    paths = generate_dataset(root / "data", n_patients=120, image_size=64, seed=1, workers=2)
    split = pd.read_csv(paths.split)
    patients = np.sort(split.loc[split["fold"].astype(str) != "TEST", "subject_id"].unique())
    rng = np.random.default_rng(0)
    h1 = set(rng.choice(patients, len(patients) // 2, replace=False).tolist())
    files = {}
    for name, keep in (("H1", h1), ("H2", set(patients) - h1)):
        files[name] = root / f"{name}.csv"
        split[split["subject_id"].isin(keep)].to_csv(files[name], index=False)
    runs = {}
    # A = retrained without H2 (trains on H1), B = retrained without H1 (trains on H2)
    for model, other in (("A", "H2"), ("B", "H1")):
        runs[model] = root / model
        assert train_main([f"--data.root={paths.root}", f"--forget_set={files[other]}",
                           f"--output_dir={runs[model]}", "--mode=retrain", *ARGS]) == 0
    # C: a retrained reference for A (the same rows left out, another seed), briefly trained
    runs["C"] = root / "C"
    assert train_main([f"--data.root={paths.root}", f"--forget_set={files['H2']}",
                       f"--output_dir={runs['C']}", "--mode=retrain", *ARGS, "--epochs=4",
                       "--seed=1"]) == 0
    return paths, files, runs


def _predictions(paths, forget_csv, run):
    from forgetmi.evaluation.evaluate import _predictions as predictions
    from forgetmi.config import ExperimentConfig, load_config
    cfg = load_config(ExperimentConfig, None, [f"--data.root={paths.root}",
                                                f"--forget_set={forget_csv}", *ARGS])
    return predictions(cfg, run / "model", ("retain", "forget", "test"), 64)


@pytest.mark.parametrize("model,unseen", [("A", "H2"), ("B", "H1")])
def test_attack_finds_members_and_nothing_else(halves, model, unseen):
    paths, files, runs = halves
    p = _predictions(paths, files[unseen], runs[model])
    members, _ = attack_features(p["retain"])
    outsiders, _ = attack_features(p["forget"])        # the other half: never trained on
    found = population_attack(members, outsiders, member_groups=p["retain"]["group"],
                              nonmember_groups=p["forget"]["group"], seed=0)
    assert found["auc"] > 0.65, found
    # Control: two random patient halves of the unseen rows, labelled member / non-member.
    groups = p["forget"]["group"]
    patients = np.unique(groups)
    fake = np.isin(groups, np.random.default_rng(1).choice(patients, len(patients) // 2,
                                                           replace=False))
    control = population_attack(outsiders[fake], outsiders[~fake], member_groups=groups[fake],
                                nonmember_groups=groups[~fake], seed=0)
    assert abs(control["auc"] - 0.5) < 0.12, control


def test_evaluate_writes_metrics_that_match_an_independent_computation(halves, tmp_path):
    paths, files, runs = halves
    # B trained on H2, A's forget rows: it is no retrained reference for A, and nothing is written
    with pytest.raises(ForgetMIError, match="data.forget_set"):
        evaluate_run(runs["A"], retrained=runs["B"], n_boot=50)
    assert not (runs["A"] / "metrics.json").exists()
    result = evaluate_run(runs["A"], retrained=runs["C"], n_boot=200)
    written = json.loads((runs["A"] / "metrics.json").read_text())
    assert written["schema"] == 1 and written["model"] == "retrained" and written["seed"] == 0
    assert written["seconds_kind"] == "training" and written["seconds"] > 0
    p = _predictions(paths, files["H2"], runs["A"])
    for part in ("forget", "retain", "test"):
        labels, logits = p[part]["label"], p[part]["joint_logits"]
        joint = written["metrics"][part]["joint"]
        expected = roc_auc_score(labels, softmax(logits.astype(np.float64)), multi_class="ovr",
                                 labels=[0, 1, 2, 3]) if len(np.unique(labels)) == 4 else None
        if expected is not None:
            assert joint["auc"]["value"] == pytest.approx(expected, abs=1e-9)
        assert joint["auc"]["low"] <= joint["auc"]["value"] <= joint["auc"]["high"]
        severity = (softmax(logits.astype(np.float64)) * np.arange(4)).sum(1)
        assert joint["severity_mse"]["value"] == pytest.approx(((severity - labels) ** 2).mean())
    # the gap is A − C on the same rows
    q = _predictions(paths, files["H2"], runs["C"])
    b_acc = float((q["test"]["joint_logits"].argmax(1) == q["test"]["label"]).mean())
    assert written["gap"]["test"]["joint"]["accuracy"] == pytest.approx(
        written["metrics"]["test"]["joint"]["accuracy"]["value"] - b_acc)
    assert 0.0 <= written["logit_similarity"]["one_minus_cosine"] <= 2.0
    mia = written["mia"]
    assert 0.0 <= mia["svc_mia_per_sample"] <= 1.0
    assert mia["population"]["auc"] > 0.5 and len(mia["population"]["roc"]["fpr"]) > 2
    assert result["label"] == "retrained"
    # nothing identifying: no patient, study or image id of the data appears in what it wrote
    split = formats.read_split(paths.split)
    text = (runs["A"] / "metrics.json").read_text()
    for column in ("subject_id", "study_id", "dicom_id"):
        assert not any(str(v) in text for v in split[column].unique() if len(str(v)) >= 6)


def test_a_retrained_references_predictions_are_kept_and_read_back(halves, tmp_path):
    """The second evaluation with the same retrained models reads their predictions instead of
    running them (the same figures), other inputs are a new entry, and no patient id is
    stored."""
    paths, files, runs = halves
    kept = paths.root / "cache" / "predictions"

    def entries():
        return {p: p.stat().st_mtime_ns for p in kept.glob("*.npz")}
    first = evaluate_run(runs["A"], retrained=runs["C"], n_boot=50, out=tmp_path / "one")
    before = entries()
    assert before                                    # A and C are retrained runs: both kept
    second = evaluate_run(runs["A"], retrained=runs["C"], n_boot=50, out=tmp_path / "two")
    assert entries() == before                       # read, not predicted and written again
    for key in ("metrics", "gap", "paired", "logit_similarity", "forget_quality"):
        assert json.dumps(first[key], sort_keys=True) == json.dumps(second[key], sort_keys=True)
    with np.load(next(iter(before)), allow_pickle=False) as stored:
        assert not any(name.endswith("/group") for name in stored.files)
        values = np.concatenate([stored[n].ravel().astype(str) for n in stored.files
                                 if n.endswith("/index")])
    subjects = {str(v) for v in pd.read_csv(paths.split)["subject_id"].unique()}
    assert len(subjects & set(values)) < len(subjects)   # row positions, not patient ids
    # Another batch size pads reports differently: its own entries, never the kept ones.
    evaluate_run(runs["A"], retrained=runs["C"], n_boot=50, out=tmp_path / "three",
                 batch_size=32)
    assert len(set(entries()) - set(before)) == 2    # A's and C's


def test_evaluate_errors(tmp_path, caplog):
    assert evaluate_main([str(tmp_path)]) == 2
    assert "no model/ folder" in caplog.text
    caplog.clear()            # every run is tried: one that cannot be scored stops nothing
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert evaluate_main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert caplog.text.count("no model/ folder") == 2
    assert f"2 of 2 run(s) not evaluated: {tmp_path / 'a'}, {tmp_path / 'b'}" in caplog.text
    with pytest.raises(SystemExit) as err:     # one folder for two runs' metrics: refused
        evaluate_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o")])
    assert err.value.code == 2 and not (tmp_path / "o").exists()


def _synthetic_partition(n_patients: int, first: int, remembered: bool, rng) -> dict:
    """Predictions of 4 rows per patient; a remembered row's true class gets a large logit."""
    n = 4 * n_patients
    labels = rng.integers(0, 4, n)
    out = {"label": labels, "group": (first + np.arange(n) // 4).astype(str)}
    for head in ("image", "text", "joint"):
        logits = rng.normal(0, 1, (n, 4))
        logits[np.arange(n), labels] += 3.0 if remembered else 0.5
        out[f"{head}_logits"] = logits
    return out


def test_attacks_store_the_forget_vs_unseen_headline():
    """No model needed: the attacks block on predictions with known membership."""
    from forgetmi.evaluation.evaluate import _attacks

    rng = np.random.default_rng(0)
    retain = _synthetic_partition(80, 0, True, rng)
    test = _synthetic_partition(40, 1000, False, rng)
    remembered = _attacks({"retain": retain, "test": test,
                           "forget": _synthetic_partition(30, 2000, True, rng)}, 0, 32, 200)
    forgotten = _attacks({"retain": retain, "test": test,
                          "forget": _synthetic_partition(30, 3000, False, rng)}, 0, 32, 200)
    head = remembered["forget_vs_unseen"]              # the headline: the loss attack
    assert head["auc"] > 0.8 and head["low"] > 0.7 and head["high"] <= 1.0
    assert head["n_forget"] == 120 and head["n_unseen"] == 160   # every test row counts
    assert head["n_forget_patients"] == 30 and head["n_boot"] == 200
    assert head["signal"].startswith("training loss")
    null = forgotten["forget_vs_unseen"]
    assert null["low"] < 0.5 < null["high"] and abs(null["auc"] - 0.5) < 0.12
    learned = remembered["forget_vs_unseen_learned"]   # the learned attack, beside it
    assert learned["auc"] > 0.8 and learned["n_forget"] == learned["n_unseen"] == 120
    assert forgotten["forget_vs_unseen_learned"]["low"] < 0.5
    json.dumps(remembered, allow_nan=False)  # strict JSON: no NaN reaches metrics.json
    # a one-patient forget request cannot fill 5 patient-grouped folds for the learned attack:
    # nulls and the reason; the loss attack needs no folds
    one = _attacks({"retain": retain, "test": test,
                    "forget": _synthetic_partition(1, 4000, True, rng)}, 0, 32, 50)
    assert one["forget_vs_unseen_learned"]["auc"] is None
    assert one["forget_vs_unseen_learned"]["n_forget"] == 4
    assert "at least 5 patients" in one["forget_vs_unseen_learned"]["reason"]
    assert one["forget_vs_unseen"]["auc"] > 0.8 and one["forget_vs_unseen"]["n_forget"] == 4
    assert one["population"]["auc"] > 0.8  # the other attacks are still there


def test_forget_vs_unseen_on_real_models(halves):
    """The headline attack on A: its own training rows (H1) against rows it never saw (H2) are
    found; two random patient halves of H2 (neither ever seen) are not. Both sides have about
    200 rows, so the intervals can tell (the TEST fold of this small cohort has ~35)."""
    from forgetmi.evaluation.mia import forget_vs_unseen_attack

    paths, files, runs = halves
    p = _predictions(paths, files["H2"], runs["A"])        # A's retain = H1, its forget = H2
    members, _ = attack_features(p["retain"])
    unseen, _ = attack_features(p["forget"])
    remembered = forget_vs_unseen_attack(members, unseen, forget_groups=p["retain"]["group"],
                                         unseen_groups=p["forget"]["group"], seed=0, n_boot=200)
    groups = p["forget"]["group"]
    patients = np.unique(groups)
    half = np.isin(groups, np.random.default_rng(1).choice(patients, len(patients) // 2,
                                                            replace=False))
    chance = forget_vs_unseen_attack(unseen[half], unseen[~half], forget_groups=groups[half],
                                     unseen_groups=groups[~half], seed=0, n_boot=200)
    assert remembered["auc"] > 0.65 and remembered["low"] > 0.5, remembered
    assert chance["low"] < 0.5 < chance["high"], chance
    assert remembered["auc"] - chance["auc"] > 0.1, (remembered, chance)
    # the headline, the loss attack, on the same rows: it tells them apart as well, with a
    # narrower interval (nothing to fit, every row scored)
    from forgetmi.evaluation.mia import forget_vs_unseen_loss, training_losses
    member_loss, unseen_loss = training_losses(p["retain"]), training_losses(p["forget"])
    loss_remembered = forget_vs_unseen_loss(member_loss, unseen_loss,
                                            forget_groups=p["retain"]["group"],
                                            unseen_groups=groups, n_boot=200)
    loss_chance = forget_vs_unseen_loss(unseen_loss[half], unseen_loss[~half],
                                        forget_groups=groups[half], unseen_groups=groups[~half],
                                        n_boot=200)
    assert loss_remembered["low"] > 0.5 and loss_chance["low"] < 0.5 < loss_chance["high"], \
        (loss_remembered, loss_chance)
    assert loss_remembered["auc"] - loss_chance["auc"] > 0.1, (loss_remembered, loss_chance)
    # (Its interval is narrower on average, not always: on the benchmark's 30 runs the learned
    # attack's was 0.93-2.23 times as wide; one pair of models decides nothing about that.)
