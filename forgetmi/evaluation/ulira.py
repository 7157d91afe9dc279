"""Per-example unlearning audit with shadow models (U-LiRA; Hayes et al. 2024).

Population attacks average over rows and under-estimate what leaks about particular patients.
The shadows must be unlearned the way the audited (target) model was, or the per-row ratios are
miscalibrated: the candidate pool is the target's forget patients plus other training patients
with as many rows again; each of N shadow pipelines forgets a set of pool patients with exactly
the target's number of forget rows, trains its original on every training row except the pool
rows it does not forget, and unlearns with the audited method and settings for the target run's
number of optimizer updates (read from its ``timing.json``). For every target forget row there
are then shadows where the row was trained on and unlearned ("in") and shadows that never saw it
("out"). A Gaussian fit of the row's statistic (the logit-scaled confidence of its label, summed
over the heads as the headline sums their losses) on each side gives a likelihood-ratio test; applied to the audited model, a positive log-ratio means the
row still looks like one that was trained on. Perfect unlearning makes the two sides
indistinguishable: ratios around 0, attack AUC 0.5.

Shadows come in complementary pairs that split the pool into two halves of the target's forget
size, so each pool patient is "in" for exactly half of the shadows and every row has N/2
statistics per side. Shadows are independent jobs: :func:`prepare_shadows` writes their configs
and data selections, :func:`forgetmi.jobs.ulira.run_shadow` runs one (in-process, or as array
tasks on a cluster), and :func:`collect` checks that every shadow matched the target (forget
rows, updates) and scores. ``forgetmi ulira`` does all three on one machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from forgetmi.errors import ForgetMIError
from forgetmi.utils.atomic import write_csv, write_json
from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi.evaluation")


@dataclass
class Shadow:
    index: int
    folder: Path
    train: object      # ExperimentConfig of the shadow's original model
    unlearn: object    # ExperimentConfig of its unlearning run
    members: frozenset  # training patients of its original
    forgotten: frozenset = frozenset()  # the pool patients it trains on and then unlearns

    @property
    def model(self) -> Path:
        return Path(self.unlearn.output_dir) / "model"

    def done(self) -> bool:
        return RunFolder(self.unlearn.output_dir).finished("unlearn")


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


def target_run(target_model: str | Path) -> dict:
    """What the audited unlearning run recorded (``timing.json`` beside its ``model/``): its
    optimizer updates, rows per stream and world size, which the shadows must reproduce."""
    run = RunFolder(Path(target_model).parent)
    timing = run.path / "timing.json"
    record = run.timing()
    if record is None:
        raise ForgetMIError(f"{timing} not found: the shadows repeat the audited run's number of "
                            "updates, so --target must be the model/ folder of a finished "
                            "unlearning run")
    if record.get("job") != "unlearn" or "updates" not in record:
        raise ForgetMIError(f"{timing} is not an unlearning run's record "
                            f"(job {record.get('job')!r})")
    return record


def rows_subset(sizes: dict, total: int, rng: np.random.Generator) -> set | None:
    """A random set of keys whose ``sizes`` add up to exactly ``total`` (None when none does):
    subset sums reached in a shuffled order, so the pick differs with the generator."""
    keys = list(sizes)
    reached = {0: None}             # sum -> (previous sum, key added)
    for i in rng.permutation(len(keys)):
        key = keys[i]
        for before in list(reached):
            after = before + sizes[key]
            if after <= total and after not in reached:
                reached[after] = (before, key)
        if total in reached:
            break
    if total not in reached:
        return None
    chosen, at = set(), total
    while reached[at] is not None:
        at, key = reached[at]
        chosen.add(key)
    return chosen


def shadow_forget_sets(forget_sizes: dict, other_sizes: dict, n_shadows: int,
                       rng: np.random.Generator) -> tuple[set, list[set]]:
    """The candidate pool and each shadow's forget patients (sizes: rows per patient).

    The pool is the target's forget patients plus other patients with as many rows again; each
    pair of shadows splits it into two halves of exactly the target's forget rows, so every pool
    patient is forgotten in one shadow of each pair and never seen by the other.
    """
    if n_shadows < 2 or n_shadows % 2:
        raise ForgetMIError(f"the number of shadows must be even and >= 2, got {n_shadows}")
    size = sum(forget_sizes.values())
    extra = rows_subset(other_sizes, size, rng)
    if extra is None:
        raise ForgetMIError(f"no set of other training patients has exactly {size} rows (the "
                            "target's forget rows) to complete the shadows' candidate pool")
    pool = set(forget_sizes) | extra
    pool_sizes = forget_sizes | {p: other_sizes[p] for p in extra}
    forget_sets = []
    for _ in range(n_shadows // 2):
        half = rows_subset(pool_sizes, size, rng)
        if half is None:
            raise ForgetMIError(f"the candidate pool ({len(pool)} patients, {2 * size} rows) does "
                                f"not split into two forget sets of {size} rows each")
        forget_sets += [half, pool - half]
    return pool, forget_sets


def prepare_shadows(cfg, train_cfg, n_shadows: int, out: str | Path,
                    target_model: str | Path) -> list[Shadow]:
    """Write each shadow's excluded-patient and forget-set files; return their configs.

    ``cfg`` is the audited unlearning run's config (data, forget set, method, its training
    settings), ``train_cfg`` the original model's (its model and training settings) and
    ``target_model`` the audited run's model folder, whose run recorded its number of updates.
    """
    from forgetmi.data.prepare import load_partitions

    out = Path(out)
    target = target_run(target_model)
    data = load_partitions(cfg.data, cfg.seed)
    split = data.split
    target_forget = data.partitions.forget
    unlearned = target.get("rows", {}).get("forget", len(target_forget))
    if unlearned != len(target_forget):
        raise ForgetMIError(f"the config's forget set has {len(target_forget)} rows but the "
                            f"audited run unlearned {unlearned}; give that run's config")
    # The holdout is trained on by no model, shadows included: it never enters the pool.
    holdout = set(data.partitions.holdout["subject_id"])
    training = split[(split["fold"] != "TEST") & ~split["subject_id"].isin(holdout)]
    rows = training.groupby("subject_id").size()
    forget_patients = set(target_forget["subject_id"])
    rng = np.random.default_rng(cfg.seed)
    pool, forget_sets = shadow_forget_sets(
        {p: int(n) for p, n in rows.items() if p in forget_patients},
        {p: int(n) for p, n in rows.items() if p not in forget_patients}, n_shadows, rng)
    # The target's run length, however its epochs divide into steps: a shadow whose primary
    # stream is shorter (retain-driven methods: the pool's unseen half is not retained) runs more
    # epochs and stops at the same update; collect() refuses any shadow that did not match.
    updates = int(target["updates"])
    epochs = max(cfg.train.epochs, 2 * int(target.get("epochs_run", cfg.train.epochs)))
    shadows = []
    for s, forgotten in enumerate(forget_sets):
        folder = out / f"shadow-{s:03d}"
        members = frozenset(set(training["subject_id"]) - (pool - forgotten))
        excluded = training[training["subject_id"].isin(pool - forgotten)]
        forget = training[training["subject_id"].isin(forgotten)]
        columns = ["subject_id", "study_id", "dicom_id", "severity", "fold"]
        write_csv(folder / "excluded.csv", _as_split_csv(excluded[columns]))
        write_csv(folder / "forget.csv", _as_split_csv(forget[columns]))
        data_cfg = replace(cfg.data, exclude=str(folder / "excluded.csv"),
                           forget_set=str(folder / "forget.csv"))
        original = replace(train_cfg, output_dir=str(folder / "original"), data=data_cfg,
                           seed=cfg.seed + 1000 * (s + 1), train=replace(train_cfg.train, resume=True))
        run = replace(cfg.train, resume=True, max_steps=updates, epochs=epochs)
        unlearning = replace(cfg, output_dir=str(folder / "unlearned"), data=data_cfg,
                             seed=original.seed, train=run,
                             unlearn=_like_target_phases(replace(
                                 cfg.unlearn, original=str(folder / "original" / "model")),
                                 cfg.train.epochs))
        shadows.append(Shadow(s, folder, original, unlearning, members, frozenset(forgotten)))
    logger.info("%d shadows: candidate pool of %d patients (%d rows); each forgets %d rows "
                "(as the target) in %d updates, and never sees the other half of the pool",
                n_shadows, len(pool), 2 * len(target_forget), len(target_forget), updates)
    return shadows


def _like_target_phases(unlearn, target_epochs: int):
    """A shadow runs more epochs than the target when its retain set is smaller; SCRUB's
    max-pass opens each of its first ``max_epochs`` epochs, so a shadow would add max-steps the
    target never took. Its max epochs are the ones the target ran (check_like_target checks the
    recorded phases)."""
    if unlearn.method == "scrub":
        scrub = replace(unlearn.scrub, max_epochs=min(unlearn.scrub.max_epochs, target_epochs))
        return replace(unlearn, scrub=scrub)
    return unlearn


def _as_split_csv(frame: pd.DataFrame) -> pd.DataFrame:
    # The split format's own label column name, so the files read back with the split reader.
    return frame.rename(columns={"severity": "edema_severity"})


def _statistics(cfg, model_dir: Path, batch_size: int):
    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.evaluation.mia import summed_lira_statistic
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_with_model
    from forgetmi.data.prepare import build_datasets

    accelerator = build_accelerator(None, 1)
    data, datasets = build_datasets(align_with_model(cfg, model_dir), accelerator)
    model = JointModel.from_pretrained(model_dir, cfg.model.allow_other_image_size)
    p = predict(accelerator, model, datasets["forget"], batch_size)
    patients = data.split["subject_id"].loc[p["index"]].to_numpy()
    return summed_lira_statistic(p), patients


def collect(cfg, shadows: list[Shadow], target_model: str | Path, out: str | Path,
            batch_size: int = 64) -> dict:
    """Score the target's forget rows against the shadows; write ``ulira.json``."""
    from sklearn.metrics import roc_auc_score

    from forgetmi.evaluation.mia import lira_scores, vulnerability_summary

    missing = [s.index for s in shadows if not s.done()]
    if missing:
        raise ForgetMIError(f"shadow(s) {missing} have not finished; run them first")
    matching = check_like_target(cfg, shadows, target_model)
    target, patients = _statistics(cfg, Path(target_model), batch_size)
    stats = np.stack([_statistics(cfg, s.model, batch_size)[0] for s in shadows], axis=1)
    # "in": the shadow trained on the row's patient and unlearned it; "out": it never saw it.
    inside = np.stack([np.isin(patients, list(s.forgotten)) for s in shadows], axis=1)
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
    # The summary's null reference: the share of rows a shadow that never saw them ("out")
    # scores above 0, and of rows it trained on and unlearned ("in"), over shadows in turn.
    null_out = [float((s_[~l_] > 0).mean()) for s_, l_ in zip(loo_scores, loo_labels)
                if (~l_).any()]
    null_in = [float((s_[l_] > 0).mean()) for s_, l_ in zip(loo_scores, loo_labels) if l_.any()]
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
              "shadow_attack_rows": int(len(loo_labels)),
              "null_reference": {
                  "never_seen_frac_above_0": float(np.mean(null_out)) if null_out else None,
                  "unlearned_frac_above_0": float(np.mean(null_in)) if null_in else None,
                  "what": "the share of rows with log-ratio > 0 for a shadow (in turn) that "
                          "never saw them, and for one that trained on and unlearned them: "
                          "the target's log_ratio.frac_above_0 reads between the two"},
              **matching}
    write_json(Path(out) / "ulira.json", result)
    logger.info("U-LiRA (%d shadows): target rows with log-ratio > 0 (look trained-on): %.0f%%; "
                "shadow attack AUC %s", len(shadows), 100 * result["log_ratio"].get("frac_above_0", 0),
                "—" if attack_auc is None else f"{attack_auc:.3f}")
    return result


def check_like_target(cfg, shadows: list[Shadow], target_model: str | Path) -> dict:
    """The forget rows, optimizer updates and world size of the target and of every shadow, as
    recorded by their runs; refuses when a shadow was not unlearned like the target."""
    from forgetmi.data import formats
    from forgetmi.data.prepare import load_partitions

    def recorded(timing: dict, forget_rows) -> dict:
        # Methods that draw only retain rows record no forget stream: count the forget set.
        rows = timing.get("rows", {})
        phases = timing.get("phases") or {}
        return {"forget_rows": int(rows["forget"] if "forget" in rows else forget_rows()),
                "updates": int(timing["updates"]), "world_size": int(timing.get("world_size", 1)),
                # max-steps (SCRUB's lead pass) and the rest; None from runs that predate them
                "lead_steps": phases.get("lead_steps"), "other_steps": phases.get("other_steps")}

    target = recorded(target_run(target_model),
                      lambda: len(load_partitions(cfg.data, cfg.seed).partitions.forget))
    runs = [recorded(RunFolder(s.unlearn.output_dir).timing(),
                     lambda s=s: len(formats.read_forget_set(s.folder / "forget.csv")))
            for s in shadows]
    for s, run in zip(shadows, runs):
        differ = [f"{k} {run[k]} (target {target[k]})" for k in target if run[k] != target[k]
                  and None not in (run[k], target[k])]
        if differ:
            raise ForgetMIError(f"shadow {s.index} was not unlearned like the audited model: "
                                f"{', '.join(differ)}; its likelihood ratios would be "
                                f"miscalibrated (rerun the shadows like the target, in a "
                                f"fresh --out folder)")
    return {"target_run": target, "shadow_runs": {k: [run[k] for run in runs] for k in target}}
