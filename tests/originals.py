"""Originals trained once per test session and shared by every module that only reads them.

Training is most of the suite's time on two cores; a module that needs *an* original model (to
unlearn from, to sweep over, to kill and resume an unlearning run) takes one of these instead
of training its own. Tests must treat the returned folders as read-only.
"""

from __future__ import annotations

from pathlib import Path

# The small CPU model every in-process test uses (a module adds its own settings after these,
# which win); log_every only changes what is logged. Exact token lengths: bucketed lengths change
# no output (tests/test_length_bucket.py) but do change which dropout draws land on real tokens,
# and the thresholds of these few-step runs were set on the exact lengths' draws.
TINY = ["--text_encoder=tiny", "--image_size=64", "--batch_size=8", "--wandb=disabled",
          "--log_every=50", "--warmup_ratio=0", "--early_stopping_patience=0",
          "--data.length_bucket=1"]

# Two epochs: enough for unlearning to have something to move, the path exercised.
SMALL = ["--epochs=2", "--lr=1e-3"]

# Twelve epochs without weight decay: the model fits its training rows (forget-set loss well
# below the test loss), so forgetting and the audits have something to measure.
FITTED = ["--epochs=12", "--lr=2e-3", "--weight_decay=0"]


def train_original(data_root: Path, out: Path, settings: list[str]) -> Path:
    """Train on retain + forget rows and return the saved model folder."""
    from forgetmi.jobs.train import main as train_main
    assert train_main([f"--data.root={data_root}", f"--output_dir={out}", *TINY,
                       "--checkpoint_every=10000", *settings]) == 0
    return out / "model"


# The shipped Bayesian sweep over Forget-MI's weights and σ, and what points it at test data:
# references trained by `train_references`, one epoch a trial, a small bootstrap.
BAYES_SWEEP = Path(__file__).resolve().parents[1] / "configs/sweeps/forgetmi-bayes.yaml"
REFERENCE_SEEDS, REFERENCE_SIZES = (3, 4), (6, 10)


def reference_settings(data_root: Path) -> list[str]:
    """The tuning experiment on the test data, with the tiny model."""
    config = Path(__file__).resolve().parents[1] / "configs/experiments/tuning-experiment.yaml"
    return [f"--config={config}", f"--data.root={data_root}", *TINY, "--lr=1e-3"]


def train_references(data_root: Path, out: Path) -> Path:
    """One original per seed (3, 4) serving both forget sizes, and a retrained model per size
    (6%, 10%) and seed, one epoch each, in ``out/original/s{seed}`` and
    ``out/retrained/{size}/s{seed}``: what the bayes sweep scores against."""
    from forgetmi.jobs.train import main as train_main
    avoid = "--data.val_avoid=[" + ",".join(f"forget_set_{s}per.csv" for s in REFERENCE_SIZES) + "]"
    common = [*reference_settings(data_root), "--epochs=1", "--checkpoint_every=10000", avoid]
    for seed in REFERENCE_SEEDS:
        assert train_main([*common, "--forget_set=null", f"--seed={seed}", "--mode=train",
                           f"--output_dir={out / 'original' / f's{seed}'}"]) == 0
        for size in REFERENCE_SIZES:
            assert train_main([*common, f"--forget_set=forget_set_{size}per.csv", f"--seed={seed}",
                               "--mode=retrain",
                               f"--output_dir={out / 'retrained' / str(size) / f's{seed}'}"]) == 0
    return out


def bayes_overrides(data_root: Path, references: Path) -> list[str]:
    """The bayes sweep's trials on the test data, against ``train_references``' models."""
    return [*reference_settings(data_root), "--epochs=1", "--evaluate.bootstrap=20",
            f"--original={references}/original/s{{seed}}/model",
            f"--evaluate.retrained={references}/retrained/{{size}}/s{{seed}}",
            "--wandb=offline"]
