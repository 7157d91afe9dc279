"""Unlearning a trained model: ``forgetmi unlearn --original RUN/model --preset unimodal ...``.

Writes the unlearned model (``model/``), the merged config, per-step and per-epoch losses
(``metrics.jsonl``) and the wall time of unlearning alone (``timing.json``: no evaluation runs
inside the timed loop, and no retrained model is needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from forgetmi.config import ExperimentConfig, resolve_run_path, save_config
from forgetmi.engine.fit import fit
from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi.unlearn")


def run_unlearning(cfg: ExperimentConfig, request: bool = False) -> dict:
    """Unlearn ``cfg.data.forget_set`` from ``cfg.unlearn.original``. ``request``: a patient's
    request (``forgetmi forget``), whose forget set is its own, not one the original was
    trained for, so the original's training rows are not checked against it."""
    from accelerate.utils import set_seed

    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_partitions, align_with_model
    from forgetmi.data.prepare import build_datasets, noisy_forget_dataset
    from forgetmi.unlearning import build_objective, method_class

    if not cfg.unlearn.original:
        raise ForgetMIError("unlearn.original: give the trained model's folder "
                            "(e.g. --original=runs/original/model)")
    from dataclasses import replace
    cfg = replace(cfg, unlearn=replace(cfg.unlearn,
                                       original=resolve_run_path(cfg.unlearn.original, cfg)))
    # The forget and retain rows are fed as the original learned them (preprocessing, tokenizer),
    # and are rows it trained on (an original shared by several forget sizes is checked here).
    cfg = align_partitions(align_with_model(cfg, cfg.unlearn.original), cfg.unlearn.original,
                           check_rows=not request)
    method = method_class(cfg.unlearn.method)
    out = Path(cfg.output_dir)
    accelerator = build_accelerator(cfg.train.precision, cfg.train.grad_accum)
    set_seed(cfg.seed)
    data, datasets = build_datasets(cfg, accelerator)
    if "forget" not in datasets:
        raise ForgetMIError("the forget set selects no rows; nothing to unlearn")
    noisy = noisy_forget_dataset(cfg, data) if method.uses_noisy_forget else None
    original = JointModel.from_pretrained(cfg.unlearn.original) if method.uses_original else None
    student = JointModel.from_pretrained(cfg.unlearn.original)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    objective = build_objective(cfg.unlearn.method, cfg, datasets, original, noisy)
    details = (f", preset {cfg.unlearn.preset}, objective {cfg.unlearn.objective}"
               if cfg.unlearn.method == "forgetmi" else "")
    logger.info("unlearning %d forget rows (%d patients) with %s%s",
                len(data.partitions.forget), data.partitions.forget["subject_id"].nunique(),
                cfg.unlearn.method, details)

    return fit(cfg, accelerator, student, objective, job="unlearn")


def main(argv: list[str] | None = None) -> int:
    """``forgetmi unlearn`` and ``launch/unlearn.py``: ``--config X --key=value``."""
    from forgetmi.jobs.entry import run_job
    return run_job(run_unlearning, argv, "forgetmi unlearn", __doc__.splitlines()[0])

