"""Unlearning a trained model: ``forgetmi unlearn --original RUN/model --preset unimodal ...``.

Writes the unlearned model (``model/``), the merged config, per-step and per-epoch losses
(``train_log.jsonl``) and the wall time of unlearning alone (``timing.json``: no evaluation runs
inside the timed loop, and no retrained model is needed). With ``evaluate.retrained`` (a sweep's
trial) the run then scores itself: ``forgetmi evaluate RUN --retrained REF`` once the workers
have finished (in a fresh process, unless the run was one plain CPU process), so
``metrics.json`` and the W&B run's summary hold its score.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from forgetmi.config import ExperimentConfig, resolve_run_path, save_config, to_dict
from forgetmi.errors import ForgetMIError
from forgetmi.utils.run_folder import RunFolder, check_finished_settings, check_output_dir

logger = logging.getLogger("forgetmi.unlearn")


def run_unlearning(cfg: ExperimentConfig, request: bool = False) -> dict:
    """Unlearn ``cfg.data.forget_set`` from ``cfg.unlearn.original``. ``request``: a patient's
    request (``forgetmi forget``), whose forget set is its own, not one the original was
    trained for, so the original's training rows are not checked against it."""
    from accelerate.utils import set_seed

    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.engine.fit import fit
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_partitions, align_with_model
    from forgetmi.data.prepare import build_datasets, noisy_forget_dataset
    from forgetmi.unlearning import build_objective, method_class

    if not cfg.unlearn.original:
        raise ForgetMIError("unlearn.original: give the trained model's folder "
                            "(e.g. --original=runs/original/model)")
    # Its data found from anywhere: a copied run folder is evaluated from another directory.
    cfg = replace(cfg, data=cfg.data.absolute(),
                  unlearn=replace(cfg.unlearn,
                                  original=resolve_run_path(cfg.unlearn.original, cfg)))
    check_output_dir(cfg.output_dir, "unlearn", reads=[cfg.unlearn.original])
    cfg = _resolve_references(cfg)  # a missing reference fails now, not after the unlearning
    # The forget and retain rows are fed as the original learned them (preprocessing, tokenizer),
    # and are rows it trained on (an original shared by several forget sizes is checked here).
    cfg = align_partitions(align_with_model(cfg, cfg.unlearn.original), cfg.unlearn.original,
                           check_rows=not request)
    check_finished_settings(cfg.output_dir, "unlearn", to_dict(cfg))  # as it would be saved
    method = method_class(cfg.unlearn.method)
    out = Path(cfg.output_dir)
    accelerator = build_accelerator(cfg.train.precision, cfg.train.grad_accum)
    set_seed(cfg.seed)
    data, datasets = build_datasets(cfg, accelerator)
    if "forget" not in datasets:
        raise ForgetMIError("the forget set selects no rows; nothing to unlearn")
    noisy = noisy_forget_dataset(cfg, data) if method.uses_noisy_forget else None
    allow = cfg.model.allow_other_image_size
    original = JointModel.from_pretrained(cfg.unlearn.original, allow) \
        if method.uses_original else None
    student = JointModel.from_pretrained(cfg.unlearn.original, allow)
    objective = build_objective(cfg.unlearn.method, cfg, datasets, original, noisy)
    details = (f", preset {cfg.unlearn.preset}, objective {cfg.unlearn.effective_objective}"
               if cfg.unlearn.method == "forgetmi" else "")
    logger.info("unlearning %d forget rows (%d patients) with %s%s",
                len(data.partitions.forget), data.partitions.forget["subject_id"].nunique(),
                cfg.unlearn.method, details)

    return fit(cfg, accelerator, student, objective, job="unlearn",
               start=lambda: save_config(cfg, out / "config.yaml"))


def _resolve_references(cfg: ExperimentConfig) -> ExperimentConfig:
    """``evaluate.retrained`` and ``evaluate.references`` with {seed}/{size} filled, each a
    finished retraining; the saved config records the folders the score came from."""
    ev = cfg.evaluate
    if ev.retrained is None:
        return cfg
    retrained = resolve_run_path(ev.retrained, cfg)
    references = [resolve_run_path(r, cfg) for r in ev.references or []]
    for key, path in [("evaluate.retrained", retrained)] + [("evaluate.references", r)
                                                             for r in references]:
        if not RunFolder(path).finished("retrain"):
            raise ForgetMIError(f"{key}: {path} is not a finished retraining (no timing.json "
                                "of a retrain job): train the references before the trials "
                                "that score against them")
    if ev.bootstrap < 1:
        raise ForgetMIError(f"evaluate.bootstrap: expected a positive number of resamples, got "
                            f"{ev.bootstrap}")
    return replace(cfg, evaluate=replace(ev, retrained=retrained,
                                         references=references or None))


# What a launcher sets for its workers: the scoring process is one plain process.
_WORKER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
               "MASTER_ADDR", "MASTER_PORT")


def score_run(cfg: ExperimentConfig) -> int:
    """Evaluate the finished run against its retrained model, as ``forgetmi evaluate`` would,
    in a fresh process (no launcher or DeepSpeed state); 0, or 2 when it cannot be scored."""
    if cfg.evaluate.retrained is None:
        return 0
    cfg = _resolve_references(cfg)
    ev = cfg.evaluate
    if _scored_against(Path(cfg.output_dir), ev.retrained):
        logger.info("%s: already scored against %s", cfg.output_dir, ev.retrained)
        return 0
    args = [cfg.output_dir, "--retrained", ev.retrained, "--bootstrap", str(ev.bootstrap)]
    if ev.references:
        args += ["--references", *ev.references]
    logger.info("scoring %s against %s", cfg.output_dir, ev.retrained)
    if _plain_process(cfg):
        from forgetmi.jobs.evaluate import main as evaluate
        code = evaluate(args)
    else:
        argv = [sys.executable, "-c", "import sys; from forgetmi.cli import main; "
                "sys.exit(main(sys.argv[1:]))", "evaluate", *args]
        env = {k: v for k, v in os.environ.items() if k not in _WORKER_ENV
               and not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))}
        code = subprocess.call(argv, env=env)
    if code != 0:
        logger.error("%s: unlearned, but not scored (evaluation exit %d); score it with: "
                     "forgetmi evaluate %s --retrained %s", cfg.output_dir, code,
                     cfg.output_dir, ev.retrained)
        return 2
    return 0


def _plain_process(cfg: ExperimentConfig) -> bool:
    """Whether the run was one CPU process in fp32, whose Accelerate state an evaluation can
    share: then it is scored here (a fresh process costs seconds of imports, and a sweep
    scores every trial); a launcher's, DeepSpeed's or a GPU's state gets a fresh process."""
    import torch

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or any(
        k.startswith(("ACCELERATE_USE_", "TORCHELASTIC_")) for k in os.environ)
    precision = cfg.train.precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return not launched and precision == "no" and not torch.cuda.is_available()


def _scored_against(run: Path, retrained: str) -> bool:
    """Whether the run's metrics.json already holds a score against ``retrained`` (a rerun of
    a finished trial rescores nothing)."""
    import json
    try:
        block = json.loads((run / "metrics.json").read_text()).get("score") or {}
    except (OSError, ValueError):
        return False
    return bool(block.get("retrained")) and \
        Path(block["retrained"]).resolve() == Path(retrained).resolve()


def main(argv: list[str] | None = None) -> int:
    """``forgetmi unlearn`` and ``launch/unlearn.py``: ``--config X --key=value``."""
    from forgetmi.jobs.entry import run_job
    return run_job(run_unlearning, argv, "forgetmi unlearn", __doc__.splitlines()[0],
                   after=score_run)

