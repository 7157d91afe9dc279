"""Originals trained once per test session and shared by every module that only reads them.

Training is most of the suite's time on two cores; a module that needs *an* original model (to
unlearn from, to sweep over, to kill and resume an unlearning run) takes one of these instead
of training its own. Tests must treat the returned folders as read-only.
"""

from __future__ import annotations

from pathlib import Path

# The small CPU model every in-process test uses (a module adds its own settings after these,
# which win); log_every only changes what is logged.
TINY = ["--text_encoder=tiny", "--image_size=64", "--batch_size=8", "--wandb=disabled",
          "--log_every=50", "--warmup_ratio=0", "--early_stopping_patience=0"]

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
