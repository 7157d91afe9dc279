"""The shadow-model audit (U-LiRA) at small scale on the generated data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetmi.data import formats
from forgetmi.evaluation.ulira import balanced_membership
from forgetmi.evaluation.ulira import main as ulira_main
from forgetmi.train import main as train_main
from forgetmi.unlearn import main as unlearn_main

COMMON = ["--text_encoder=tiny", "--image_size=64", "--batch_size=8", "--wandb=disabled",
          "--log_every=50", "--warmup_ratio=0", "--early_stopping_patience=0",
          "--checkpoint_every=10000"]


def test_balanced_membership():
    member = balanced_membership(list(range(7)), 6, np.random.default_rng(0))
    assert (member.sum(axis=1) == 3).all()                 # each patient in half the shadows
    assert set(member.sum(axis=0)) <= {3, 4}               # each shadow holds about half
    with pytest.raises(Exception, match="even"):
        balanced_membership([1, 2], 3, np.random.default_rng(0))


@pytest.fixture(scope="module")
def audited(demo_data, tmp_path_factory):
    """An original fitted to its rows and a no-op "unlearning" of it (learning rate 0), so the
    forget rows are still remembered and the audit must say so."""
    root = tmp_path_factory.mktemp("ulira")
    data = [f"--data.root={demo_data.root}", *COMMON]
    assert train_main([*data, f"--output_dir={root / 'original'}", "--epochs=12", "--lr=2e-3",
                       "--weight_decay=0"]) == 0
    assert unlearn_main([*data, f"--output_dir={root / 'noop'}",
                         f"--original={root / 'original' / 'model'}", "--epochs=1", "--lr=0",
                         "--weight_decay=0"]) == 0
    return root


def ulira(root, *extra):
    return ulira_main(["--config", str(root / "noop" / "config.yaml"),
                       "--train-config", str(root / "original" / "config.yaml"),
                       "--target", str(root / "noop" / "model"), "--out", str(root / "shadows"),
                       "--shadows", "6", *extra])


def test_audit_finds_rows_that_were_not_forgotten(demo_data, audited):
    assert ulira(audited, "--only", "2") == 0              # one array task alone
    assert (audited / "shadows" / "shadow-002" / "unlearned" / "model").is_dir()
    assert not (audited / "shadows" / "shadow-000" / "original").exists()
    assert ulira(audited) == 0
    result = json.loads((audited / "shadows" / "ulira.json").read_text())
    forget = formats.read_forget_set(demo_data.forget_sets[10])
    assert result["n_shadows"] == 6 and result["n_rows"] == len(forget)
    assert result["n_patients"] == forget["subject_id"].nunique()
    assert result["log_ratio"]["n_defined"] == len(forget)  # 3 "in" and 3 "out" per row
    # shadows that trained on a row are more confident in its label than those that did not
    assert result["in_minus_out_statistic"] > 0.3, result
    assert result["log_ratio"]["mean"] > 0 and result["log_ratio"]["frac_above_0"] > 0.5, result
    assert 0.0 <= result["shadow_attack_auc"] <= 1.0
    assert result["shadow_attack_rows"] == 6 * len(forget)
    # each shadow trained on about half of the training patients and forgot its share
    for s in range(6):
        excluded = formats.read_forget_set(audited / "shadows" / f"shadow-{s:03d}" / "excluded.csv")
        kept = formats.read_forget_set(audited / "shadows" / f"shadow-{s:03d}" / "forget.csv")
        assert set(excluded["subject_id"]).isdisjoint(kept["subject_id"])
        assert 0 < kept["subject_id"].nunique() < forget["subject_id"].nunique()
    # nothing identifying in the result
    text = (audited / "shadows" / "ulira.json").read_text()
    assert not any(str(v) in text for v in forget["subject_id"].unique())


def test_rerun_skips_finished_shadows(audited, caplog):
    assert ulira(audited) == 0
    assert caplog.text.count("already finished") == 6


def test_odd_number_of_shadows_is_refused(audited, caplog):
    assert ulira(audited, "--shadows", "3") == 2
    assert "even" in caplog.text


def test_shadows_as_tasks_then_scoring(audited, caplog):
    """The executor path: finished shadows are not resubmitted, and the scoring task runs."""
    (audited / "shadows" / "ulira.json").unlink()
    assert ulira(audited, "--executor", "local") == 0
    assert "0 shadow(s) submitted (6 already finished)" in caplog.text
    assert json.loads((audited / "shadows" / "ulira.json").read_text())["n_shadows"] == 6
