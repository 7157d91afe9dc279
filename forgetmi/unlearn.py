"""Unlearning a trained model: ``forgetmi unlearn --original RUN/model --preset unimodal ...``.

Writes the unlearned model (``model/``), the merged config, per-step and per-epoch losses
(``metrics.jsonl``) and the wall time of unlearning alone (``timing.json``: no evaluation runs
inside the timed loop, and no retrained model is needed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from forgetmi.config import ExperimentConfig, save_config
from forgetmi.entry import fit
from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi.unlearn")


def noisy_forget_dataset(cfg: ExperimentConfig, data):
    """The perturbed copy of the forget set (the clean one under the no-noise preset)."""
    from dataclasses import replace

    from forgetmi.data.dataset import EdemaDataset
    from forgetmi.data.noise import build_perturber

    # Noise follows the run's seed unless noise.seed pins it: seeds must not share one copy.
    noise = cfg.noise.for_run(cfg.seed)
    if cfg.unlearn.preset == "no-noise" and cfg.unlearn.weights is None:
        noise = replace(noise, use_image=False, use_text=False)
    logger.info("noisy forget set: noise seed %d%s", noise.seed,
                "" if cfg.noise.seed is not None else " (the run's seed)")
    perturber = build_perturber(noise, cfg.data.path("synonyms"))
    return EdemaDataset(data.partitions.forget, data.image_cache, data.token_cache,
                        perturb=perturber, reports=data.reports.set_index("study_id")["text"])


def resolve_run_path(template: str, cfg: ExperimentConfig) -> str:
    """Fill ``{seed}``, ``{size}`` (the forget set's percentage, e.g. 10 from
    forget_set_10per.csv) and ``{forget_set}`` (its file stem) in a run path, so one sweep over
    sizes and seeds names each run's own original model (online sweeps cannot template)."""
    import re
    name = Path(cfg.data.forget_set or "").stem
    match = re.search(r"(\d+(?:\.\d+)?)\s*per", name)
    values = {"seed": cfg.seed, "forget_set": name, "size": match.group(1) if match else name}
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise ForgetMIError(f"unlearn.original {template!r}: unknown placeholder {err}; "
                            "use {seed}, {size} or {forget_set}") from None


def run_unlearning(cfg: ExperimentConfig) -> dict:
    from accelerate.utils import set_seed

    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_with_model
    from forgetmi.train import build_datasets
    from forgetmi.unlearning import build_objective, method_class

    if not cfg.unlearn.original:
        raise ForgetMIError("unlearn.original: give the trained model's folder "
                            "(e.g. --original=runs/original/model)")
    from dataclasses import replace
    cfg = replace(cfg, unlearn=replace(cfg.unlearn,
                                       original=resolve_run_path(cfg.unlearn.original, cfg)))
    # The forget and retain rows are fed as the original learned them (preprocessing, tokenizer).
    cfg = align_with_model(cfg, cfg.unlearn.original)
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
    """Entry for ``launch/unlearn.py`` and ``forgetmi unlearn``: ``--config X --key=value``."""
    from forgetmi.entry import run_job
    return run_job(run_unlearning, argv, "forgetmi unlearn", __doc__.splitlines()[0])


if __name__ == "__main__":
    raise SystemExit(main())
