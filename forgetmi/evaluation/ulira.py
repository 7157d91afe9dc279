"""Per-example unlearning audit with shadow models (U-LiRA; Hayes et al. 2024).

Population attacks average over rows and under-estimate what leaks about particular patients.
Here each of N shadow pipelines trains an original model on about half of the training patients
and unlearns, with the audited method and settings, the target forget patients it trained on.
For every target forget row there are then shadows where the row was trained on and unlearned
("in") and shadows that never saw it ("out"). A Gaussian fit of the row's statistic (the
logit-scaled confidence of its label) on each side gives a likelihood-ratio test; applied to the
audited model, a positive log-ratio means the row still looks like one that was trained on.
Perfect unlearning makes the two sides indistinguishable: ratios around 0, attack AUC 0.5.

Each forget patient is "in" for exactly half of the shadows (a balanced design), so every row
has N/2 statistics per side. Shadows are independent jobs: :func:`prepare_shadows` writes their
configs and data selections, :func:`run_shadow` runs one (in-process here; as array tasks on a
cluster), and :func:`collect` scores. ``forgetmi ulira`` does all three on one machine.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from forgetmi.errors import ForgetMIError
from forgetmi.utils.atomic import write_csv, write_json

logger = logging.getLogger("forgetmi.evaluation")


@dataclass
class Shadow:
    index: int
    folder: Path
    train: object      # ExperimentConfig of the shadow's original model
    unlearn: object    # ExperimentConfig of its unlearning run
    members: frozenset  # training patients (a half)

    @property
    def model(self) -> Path:
        return Path(self.unlearn.output_dir) / "model"

    def done(self) -> bool:
        timing = Path(self.unlearn.output_dir) / "timing.json"
        return timing.is_file() and json.loads(timing.read_text()).get("job") == "unlearn"


def balanced_membership(patients: list, n_shadows: int, rng: np.random.Generator) -> np.ndarray:
    """(patients, shadows) booleans: each patient in exactly half of the shadows, and each
    shadow holding about half of the patients (cyclic blocks after shuffling both)."""
    if n_shadows < 2 or n_shadows % 2:
        raise ForgetMIError(f"the number of shadows must be even and >= 2, got {n_shadows}")
    order = rng.permutation(len(patients))
    shadow_order = rng.permutation(n_shadows)
    member = np.zeros((len(patients), n_shadows), dtype=bool)
    for rank, i in enumerate(order):
        for k in range(n_shadows // 2):
            member[i, shadow_order[(rank + k) % n_shadows]] = True
    return member


def prepare_shadows(cfg, train_cfg, n_shadows: int, out: str | Path) -> list[Shadow]:
    """Write each shadow's excluded-patient and forget-set files; return their configs.

    ``cfg`` is the audited unlearning run's config (data, forget set, method, its training
    settings), ``train_cfg`` the original model's (its model and training settings).
    """
    from forgetmi.data.prepare import load_partitions

    out = Path(out)
    data = load_partitions(cfg.data, cfg.seed)
    split = data.split
    forget_patients = sorted(data.partitions.forget["subject_id"].unique())
    training = split[split["fold"] != "TEST"]
    others = sorted(set(training["subject_id"]) - set(forget_patients))
    rng = np.random.default_rng(cfg.seed)
    membership = {p: row for p, row in zip(forget_patients,
                                            balanced_membership(forget_patients, n_shadows, rng))}
    membership |= {p: row for p, row in zip(others, balanced_membership(others, n_shadows, rng))}
    shadows = []
    for s in range(n_shadows):
        folder = out / f"shadow-{s:03d}"
        members = frozenset(p for p, row in membership.items() if row[s])
        excluded = training[~training["subject_id"].isin(members)]
        forget = training[training["subject_id"].isin(members & set(forget_patients))]
        if forget.empty:
            raise ForgetMIError(f"shadow {s} holds none of the forget patients; use fewer shadows")
        columns = ["subject_id", "study_id", "dicom_id", "severity", "fold"]
        write_csv(folder / "excluded.csv", _as_split_csv(excluded[columns]))
        write_csv(folder / "forget.csv", _as_split_csv(forget[columns]))
        data_cfg = replace(cfg.data, exclude=str(folder / "excluded.csv"),
                           forget_set=str(folder / "forget.csv"))
        original = replace(train_cfg, output_dir=str(folder / "original"), data=data_cfg,
                           seed=cfg.seed + 1000 * (s + 1), train=replace(train_cfg.train, resume=True))
        unlearning = replace(cfg, output_dir=str(folder / "unlearned"), data=data_cfg,
                             seed=original.seed, train=replace(cfg.train, resume=True),
                             unlearn=replace(cfg.unlearn, original=str(folder / "original" / "model")))
        shadows.append(Shadow(s, folder, original, unlearning, members))
    logger.info("%d shadows: each trains on ~%d of %d training patients; %d forget patients, "
                "each unlearned in %d shadows", n_shadows, len(training["subject_id"].unique()) // 2,
                training["subject_id"].nunique(), len(forget_patients), n_shadows // 2)
    return shadows


def _as_split_csv(frame: pd.DataFrame) -> pd.DataFrame:
    # The split format's own label column name, so the files read back with the split reader.
    return frame.rename(columns={"severity": "edema_severity"})


def run_shadow(shadow: Shadow) -> None:
    """Train the shadow's original and unlearn its forget patients (skipped when done)."""
    from forgetmi.train import run_training
    from forgetmi.unlearn import run_unlearning

    if shadow.done():
        logger.info("shadow %d already finished", shadow.index)
        return
    run_training(shadow.train, "train")
    run_unlearning(shadow.unlearn)


def _statistics(cfg, model_dir: Path, batch_size: int):
    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.evaluation.mia import lira_statistic
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_with_model
    from forgetmi.train import build_datasets

    accelerator = build_accelerator(None, 1)
    data, datasets = build_datasets(align_with_model(cfg, model_dir), accelerator)
    p = predict(accelerator, JointModel.from_pretrained(model_dir), datasets["forget"], batch_size)
    patients = data.split["subject_id"].loc[p["index"]].to_numpy()
    return lira_statistic(p["joint_logits"], p["label"]), patients


def collect(cfg, shadows: list[Shadow], target_model: str | Path, out: str | Path,
            batch_size: int = 64) -> dict:
    """Score the target's forget rows against the shadows; write ``ulira.json``."""
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import lira_scores, vulnerability_summary

    missing = [s.index for s in shadows if not s.done()]
    if missing:
        raise ForgetMIError(f"shadow(s) {missing} have not finished; run them first")
    target, patients = _statistics(cfg, Path(target_model), batch_size)
    stats = np.stack([_statistics(cfg, s.model, batch_size)[0] for s in shadows], axis=1)
    inside = np.stack([np.isin(patients, list(s.members)) for s in shadows], axis=1)
    in_stats, out_stats = np.where(inside, stats, np.nan), np.where(inside, np.nan, stats)
    scores = lira_scores(target, in_stats, out_stats, fix_variance=True)

    # How well the test tells "unlearned" from "never seen": each shadow in turn is the audited
    # model, scored against the others (needs >= 2 statistics per side without it).
    loo_scores, loo_labels = [], []
    for s in range(len(shadows)):
        rest = np.delete(np.arange(len(shadows)), s)
        result = lira_scores(stats[:, s], in_stats[:, rest], out_stats[:, rest], fix_variance=True)
        ok = np.isfinite(result["score"])
        loo_scores.append(result["score"][ok])
        loo_labels.append(inside[ok, s])
    loo_scores, loo_labels = np.concatenate(loo_scores), np.concatenate(loo_labels)
    attack_auc = (float(roc_auc_score(loo_labels, loo_scores))
                  if 0 < loo_labels.sum() < len(loo_labels) else None)

    per_patient = pd.Series(scores["log_ratio"]).groupby(patients).mean()
    # How much more confident in its label a shadow is on rows it trained on and unlearned than
    # on rows it never saw (0 for perfect unlearning), averaged over rows.
    with np.errstate(invalid="ignore"):
        gap = np.nanmean(in_stats, axis=1) - np.nanmean(out_stats, axis=1)
    result = {"method": cfg.unlearn.method, "n_shadows": len(shadows), "n_rows": int(len(target)),
              "n_patients": int(per_patient.size),
              "log_ratio": vulnerability_summary(scores["log_ratio"]),
              "patient_log_ratio": vulnerability_summary(per_patient.to_numpy()),
              "in_minus_out_statistic": float(np.nanmean(gap)),
              "shadow_attack_auc": attack_auc,
              "shadow_attack_rows": int(len(loo_labels))}
    write_json(Path(out) / "ulira.json", result)
    logger.info("U-LiRA (%d shadows): target rows with log-ratio > 0 (look trained-on): %.0f%%; "
                "shadow attack AUC %s", len(shadows), 100 * result["log_ratio"].get("frac_above_0", 0),
                "—" if attack_auc is None else f"{attack_auc:.3f}")
    return result


def main(argv: list[str] | None = None) -> int:
    """``forgetmi ulira --config UNLEARN_RUN/config.yaml --train-config ORIGINAL_RUN/config.yaml
    --target UNLEARN_RUN/model --shadows 8 --out DIR [--executor slurm ...] [--key=value ...]``.

    Without ``--executor`` every shadow runs here, then the scoring. With it, the shadows are
    one array (each task ``--only K``) and the scoring a task held until they all succeed.
    """
    from forgetmi.config import ExperimentConfig, load_config
    from forgetmi.hpc.submit import add_hpc_arguments

    parser = argparse.ArgumentParser(prog="forgetmi ulira", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="the audited unlearning run's config.yaml (method and settings)")
    parser.add_argument("--train-config", required=True,
                        help="the original model's config.yaml (how the shadows are trained)")
    parser.add_argument("--target", required=True, help="the audited unlearned model folder")
    parser.add_argument("--shadows", type=int, default=8, help="even number of shadow pipelines")
    parser.add_argument("--out", required=True, help="folder for the shadows and ulira.json")
    parser.add_argument("--only", type=int, help="run one shadow (an array task) and stop")
    parser.add_argument("--collect-only", action="store_true",
                        help="score finished shadows without running any")
    add_hpc_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(ExperimentConfig, args.config, overrides)
        train_cfg = load_config(ExperimentConfig, args.train_config)
        shadows = prepare_shadows(cfg, train_cfg, args.shadows, args.out)
        if args.executor:
            return _submit(args, argv if argv is not None else [], shadows)
        if not args.collect_only:
            for shadow in shadows:
                if args.only is None or shadow.index == args.only:
                    run_shadow(shadow)
        if args.only is None:
            collect(cfg, shadows, args.target, args.out)
    except ForgetMIError as err:
        logger.error("%s", err)
        return 2
    return 0


def _submit(args, argv: list[str], shadows: list[Shadow]) -> int:
    """The shadows as one array, the scoring after them (``afterok``)."""
    from forgetmi.hpc.submit import hpc_from_args
    from forgetmi.hpc.executor import submit_array
    from forgetmi.hpc.tasks import Task

    hpc = hpc_from_args(args)
    # The tasks get this command line less the executor settings.
    keep, skip = [], False
    hpc_flags = {a.option_strings[0] for a in _hpc_actions()}
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0]
        if name in hpc_flags:
            skip = "=" not in item
            continue
        keep.append(item)
    todo = [s for s in shadows if not s.done()]
    tasks = [Task(f"shadow-{s.index}", "ulira", [*keep, "--only", str(s.index)],
                  str(s.folder), hpc.accelerate_config) for s in todo]
    out = Path(args.out)
    jobs = submit_array(hpc, tasks, out / "slurm", "ulira-shadows")
    after = sorted({j.job_id.split("_")[0] for j in jobs}) if hpc.executor == "slurm" else None
    single = replace(hpc, processes=1, gpus_per_task=0)
    submit_array(single, [Task("ulira-collect", "ulira", [*keep, "--collect-only"], str(out))],
                 out / "slurm", "ulira-collect", after=after or None)
    logger.info("%d shadow(s) submitted (%d already finished), scoring after them",
                len(tasks), len(shadows) - len(tasks))
    return 0


def _hpc_actions():
    from forgetmi.hpc.submit import add_hpc_arguments
    parser = argparse.ArgumentParser(add_help=False)
    add_hpc_arguments(parser)
    return [a for a in parser._actions if a.option_strings]
