"""Training the original model (retain + forget) and retraining the gold standard (retain only).

Same code path, different rows. Usable in-process (``main(argv)``), through ``forgetmi train``,
and under ``accelerate launch launch/train.py --config ... --key=value``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from forgetmi.config import ExperimentConfig, save_config, to_dict
from forgetmi.utils.run_folder import check_finished_settings, check_output_dir

logger = logging.getLogger("forgetmi.train")


def run_training(cfg: ExperimentConfig, mode: str = "train") -> dict:
    """Train (``mode="train"``: retain + forget) or retrain (``"retrain"``: retain only)."""
    import pandas as pd
    from accelerate.utils import set_seed

    from forgetmi.data.dataset import EdemaDataset
    from forgetmi.data.prepare import build_datasets
    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.engine.fit import fit
    from forgetmi.engine.objective import SupervisedObjective
    from forgetmi.evaluation.metrics import head_metrics
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import for_new_model

    if mode not in ("train", "retrain"):
        raise ValueError(f"mode must be train or retrain, got {mode!r}")
    cfg = for_new_model(cfg)  # the model records the image preprocessing it learns on
    # Its data found from anywhere: a copied run folder is evaluated from another directory.
    cfg = replace(cfg, data=cfg.data.absolute())
    out = Path(cfg.output_dir)
    check_output_dir(out, mode)
    check_finished_settings(out, mode, to_dict(cfg))
    accelerator = build_accelerator(cfg.train.precision, cfg.train.grad_accum)
    set_seed(cfg.seed)
    data, datasets = build_datasets(cfg, accelerator)
    rows = data.partitions.retain if mode == "retrain" else \
        pd.concat([data.partitions.retain, data.partitions.forget]).sort_index()
    train_set = EdemaDataset(rows, data.image_cache, data.token_cache,
                             length_bucket=cfg.data.length_bucket)
    logger.info("%s: %d training rows (%s), world size %d", mode, len(rows),
                "retain only" if mode == "retrain" else "retain + forget", accelerator.num_processes)

    set_seed(cfg.seed)  # identical initial weights whatever happened above
    model = JointModel(cfg.model)
    objective = SupervisedObjective(train_set, cfg.train.batch_size, cfg.train.ranking_weight,
                                    cfg.train.joint_weight)
    validation = datasets.get("validation")

    def evaluate(m):
        return head_metrics(predict(accelerator, m, validation, cfg.train.eval_batch_size,
                                    cfg.train.num_workers))

    return fit(cfg, accelerator, model, objective, evaluate if validation is not None else None,
               job=mode, start=lambda: save_config(cfg, out / "config.yaml"))


def main(argv: list[str] | None = None, mode: str = "train") -> int:
    """Entry for ``launch/train.py`` and ``forgetmi train|retrain``: ``--config X --key=value``
    (``--mode=retrain`` selects retraining from the launcher)."""
    from forgetmi.jobs.entry import run_job

    argv = list(argv) if argv is not None else None
    if argv is None:
        import sys
        argv = sys.argv[1:]
    modes = [a.split("=", 1)[1] for a in argv if a.startswith("--mode=")]
    argv = [a for a in argv if not a.startswith("--mode=")]
    mode = modes[-1] if modes else mode
    return run_job(lambda cfg: run_training(cfg, mode), argv, f"forgetmi {mode}",
                   __doc__.splitlines()[0])


def retrain(argv: list[str] | None = None) -> int:
    """``forgetmi retrain`` and ``launch/retrain.py``: the gold standard, on retain rows only."""
    return main(argv, mode="retrain")
