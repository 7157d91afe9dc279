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
from forgetmi.evaluation.evaluate import evaluate_run
from forgetmi.evaluation.evaluate import main as evaluate_main
from forgetmi.evaluation.metrics import softmax
from forgetmi.evaluation.mia import attack_features, population_attack
from forgetmi.train import main as train_main

# Long enough, without weight decay, for the models to fit their rows (train CE ≈ 0.15 against
# ≈ 1.0 on unseen rows), as an original model that memorised its patients would.
ARGS = ["--text_encoder=tiny", "--image_size=64", "--batch_size=8", "--wandb=disabled",
        "--log_every=50", "--warmup_ratio=0", "--early_stopping_patience=0", "--epochs=25",
        "--lr=2e-3", "--weight_decay=0", "--checkpoint_every=10000"]


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """A 120-patient dataset, its non-test patients split in two halves, and a model per half."""
    from forgetmi.data.synthetic import generate_dataset
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
    result = evaluate_run(runs["A"], retrained=runs["B"], n_boot=200)
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
    # the gap is A − B on the same rows
    q = _predictions(paths, files["H2"], runs["B"])
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


def test_evaluate_errors(tmp_path, caplog):
    assert evaluate_main([str(tmp_path)]) == 2
    assert "no model/ folder" in caplog.text
