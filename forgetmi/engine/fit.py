"""The last step shared by training, retraining and unlearning: an objective run on the joint
model through the engine, with tracking, and the model saved as safetensors."""

from __future__ import annotations

from pathlib import Path

from forgetmi.config import to_dict
from forgetmi.engine.loop import Engine
from forgetmi.models.joint import save_weights
from forgetmi.utils.tracking import Tracker


def fit(cfg, accelerator, model, objective, evaluate=None, job: str | None = None) -> dict:
    """Run ``objective`` on the joint ``model`` through the engine, saving it to
    ``cfg.output_dir``: the last step shared by training, retraining and unlearning.

    Returns the ``accelerator``, the engine's final ``state`` (a
    :class:`~forgetmi.engine.state.LoopState`), the ``output_dir`` and the ``world_size``."""
    out = Path(cfg.output_dir)

    def save_model(state, path):
        save_weights(model.config, model.bert_config, state, path)

    tracker = Tracker(out, cfg.tracking, to_dict(cfg), enabled=accelerator.is_main_process,
                      job=job, seed=cfg.seed)
    engine = Engine(accelerator, model, objective, cfg.train, out, cfg.seed, tracker,
                    evaluate=evaluate, save_model=save_model, job=job)
    try:
        state = engine.fit()
    except BaseException:
        # A crashed or stopped run's wandb record is closed as failed, and says how to upload it.
        tracker.finish(exit_code=1)
        raise
    tracker.finish()  # the engine finishes it too; a run found already done is closed here
    return {"accelerator": accelerator, "state": state, "output_dir": out,
            "world_size": accelerator.num_processes}
