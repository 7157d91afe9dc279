"""The last step shared by training, retraining and unlearning: an objective run on the joint
model through the engine, with tracking, and the model saved as safetensors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from forgetmi.config import to_dict
from forgetmi.engine.loop import Engine
from forgetmi.engine.state import LoopState
from forgetmi.models.joint import save_weights
from forgetmi.utils.run_folder import RunFolder, training_settings
from forgetmi.utils.tracking import Tracker

logger = logging.getLogger("forgetmi.engine")


def fit(cfg, accelerator, model, objective, evaluate=None, job: str | None = None,
        start: Callable[[], None] | None = None) -> dict:
    """Run ``objective`` on the joint ``model`` through the engine, saving it to
    ``cfg.output_dir``: the last step shared by training, retraining and unlearning.

    ``start`` runs on the main process once the checkpoint to resume from (if any) is known to
    be this run's and the run is not finished yet: the run's first write (its config, say), so
    a refused or finished run's folder is left untouched.

    Returns the ``accelerator``, the engine's final ``state`` (a
    :class:`~forgetmi.engine.state.LoopState`), the ``output_dir`` and the ``world_size``."""
    out = Path(cfg.output_dir)

    def save_model(state, path):
        # The engine's own model folders (model/, best/), replaced on every save.
        save_weights(model.config, model.bert_config, state, path, replace=True)

    engine = Engine(accelerator, model, objective, cfg.train, out, cfg.seed, tracker=None,
                    evaluate=evaluate, save_model=save_model, job=job,
                    settings=training_settings(to_dict(cfg), job))
    # Finished: timing.json says so (the engine's last act), whether or not its checkpoints
    # are kept. --resume=false redoes it.
    finished = cfg.train.resume and job is not None and RunFolder(out).finished(job)
    state = LoopState(done=True) if finished else engine.resume()
    if finished:
        logger.info("run already finished in %s; nothing to do", out)
        if accelerator.is_main_process:
            engine.prune_finished()   # one left by an interrupted end or an older version
    elif state.done:
        logger.info("run already finished in %s; nothing to do", out)
    else:
        if start is not None and accelerator.is_main_process:
            start()
        engine.tracker = Tracker(out, cfg.tracking, to_dict(cfg),
                                 enabled=accelerator.is_main_process, job=job, seed=cfg.seed)
        try:
            state = engine.fit(state)
        except BaseException:
            # A crashed or stopped run's wandb record is closed as failed, and says how to
            # upload it.
            engine.tracker.finish(exit_code=1)
            raise
        engine.tracker.finish()  # the engine's last act closes it too; closing twice is a no-op
    return {"accelerator": accelerator, "state": state, "output_dir": out,
            "world_size": accelerator.num_processes}
