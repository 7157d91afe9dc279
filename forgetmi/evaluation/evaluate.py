"""Scoring one trained, retrained or unlearned model (``forgetmi evaluate RUN_DIR``).

For every partition (forget, retain, validation, test) and head (image, text, joint): the
metrics of :func:`forgetmi.evaluation.metrics.full_metrics` with patient-level bootstrap
confidence intervals; the membership attacks (the paper's SVC on per-sample losses, the
release's per-batch variant for like-for-like comparison, a cross-validated population
attack on several signals with patient-level scores, the headline forget-vs-unseen loss-attack
AUC over every unseen row with a patient jackknife 95% interval, ``mia.forget_vs_unseen``, and
the learned forget-vs-unseen attack beside it, ``mia.forget_vs_unseen_learned``); and, given
the retrained reference, the gap to it, the logit similarity on retain rows and the run's
``score`` (:mod:`forgetmi.evaluation.score`: what a sweep optimises). Written
atomically to ``RUN_DIR/metrics.json``, or ``--out DIR/metrics.json`` (an original shared by
every forget size is scored once per size, each into its own folder; schema 1, read by
``forgetmi report``). Counts and scores only: no report text, no patient id.

A bare model folder (``config.json`` + ``model.safetensors``, e.g. a published checkpoint
converted by ``forgetmi import-checkpoint``) is scored too, on the data of ``--config`` and
``--key=value`` overrides; its ``metrics.json`` is written beside the weights. Every model is fed
the image preprocessing and tokenizer it records
(:func:`~forgetmi.models.provenance.align_with_model`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from forgetmi.errors import ForgetMIError
from forgetmi.utils.atomic import write_json
from forgetmi.utils.run_folder import RunFolder

logger = logging.getLogger("forgetmi.evaluation")

PARTITIONS = ("forget", "retain", "validation", "test", "holdout")
SCHEMA = 1


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def is_model_folder(path: Path) -> bool:
    """A saved model itself (config.json + weights) rather than a run folder holding one."""
    from forgetmi.models.joint import CONFIG_NAME, WEIGHTS_NAME
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def _run_config(run: Path, config: str | None = None, overrides: list[str] | None = None):
    """The run's merged config (its config.yaml, or ``config`` for a bare model folder) with
    ``overrides`` on top."""
    from forgetmi.config import ExperimentConfig, load_config, load_run_config
    if is_model_folder(run):
        cfg = load_config(ExperimentConfig, config, overrides)
        split = cfg.data.path("split")
        if config is None and not split.is_file():
            raise ForgetMIError(f"{run}: a model folder outside a run records no data to score "
                                "it on (no config.yaml beside it); pass --config EXPERIMENT.yaml "
                                "or --data.root=DIR")
        return cfg
    if not (run / "model").is_dir():
        raise ForgetMIError(f"{run}: no model/ folder (is this a finished training, retraining "
                            "or unlearning run?)")
    if not (run / "config.yaml").is_file():
        raise ForgetMIError(f"{run}: no config.yaml beside the model")
    return load_run_config(run, overrides)


def as_run_folder(path: Path) -> Path:
    """``RUN/model`` as its run folder ``RUN`` (its config.yaml says what data the model was
    made on, and its metrics.json goes there); any other path as it is."""
    path = Path(path)
    if path.name == "model" and is_model_folder(path) and (path.parent / "config.yaml").is_file():
        return path.parent
    return path


def _model_dir(run: Path) -> Path:
    return run if is_model_folder(run) else run / "model"


def _job(run: Path) -> tuple[str | None, float | None, int | None]:
    """The engine's timing.json: job kind, wall seconds, and the processes they ran on."""
    info = RunFolder(run).timing()
    if info is None:
        return None, None, None
    return info.get("job"), info.get("train_seconds"), info.get("world_size")


def describe(run: Path, cfg) -> dict:
    """Which model this is (original / retrained / a method), for the report's rows."""
    job, seconds, world_size = _job(run)
    if job is None and is_model_folder(run):
        from forgetmi.models.provenance import read_model_record
        model = label = ("published" if read_model_record(run)[0].origin == "release"
                         else "model")
    elif job == "unlearn":
        model = cfg.unlearn.method
        label = f"{model} ({cfg.unlearn.preset})" if model == "forgetmi" else model
    elif job in ("train", "retrain"):
        model = label = "original" if job == "train" else "retrained"
    else:
        raise ForgetMIError(f"{run}/timing.json: no 'job' (train, retrain or unlearn) recorded; "
                            "was the run finished?")
    forget_set = cfg.data.forget_set
    match = re.search(r"(\d+(?:\.\d+)?)\s*per", forget_set or "")
    return {"model": model, "label": label,
            "preset": cfg.unlearn.preset if model == "forgetmi" else None,
            "forget_set": Path(forget_set).name if forget_set else None,
            "forget_percent": float(match.group(1)) if match else None,
            "seed": cfg.seed, "seconds": seconds, "world_size": world_size,
            "seconds_kind": "unlearning" if job == "unlearn" else "training"}


def _predictions(cfg, model_dir: Path, parts: tuple[str, ...], batch_size: int):
    from forgetmi.engine.distributed import build_accelerator
    from forgetmi.evaluation.predict import predict
    from forgetmi.models import JointModel
    from forgetmi.models.provenance import align_with_model
    from forgetmi.data.prepare import build_datasets

    from forgetmi.data.prepare import load_partitions
    from forgetmi.evaluation import prediction_cache

    # Each model sees its own preprocessing and tokenizer (a retrained reference may differ).
    aligned = align_with_model(cfg, model_dir)
    # Kept for retrained models only: the references other runs' evaluations read again.
    kept = (prediction_cache.path_for(aligned, prediction_cache.key(aligned, model_dir, parts,
                                                                    batch_size))
            if RunFolder(Path(model_dir).parent).job == "retrain" else None)
    out = prediction_cache.load(kept) if kept is not None else None
    if out is not None:
        logger.debug("predictions of %s read from %s", model_dir, kept)
        data = load_partitions(aligned.data, aligned.seed)
    else:
        accelerator = build_accelerator(None, 1)
        data, datasets = build_datasets(aligned, accelerator)
        model = JointModel.from_pretrained(model_dir, cfg.model.allow_other_image_size).to(
            accelerator.device)
        out = {part: predict(accelerator, model, datasets[part], batch_size, embeddings=True)
               for part in parts if part in datasets}
        if kept is not None:
            prediction_cache.save(kept, out)
    subjects = data.split["subject_id"]
    for p in out.values():
        # Patient ids stay in memory as grouping keys; they are never written.
        p["group"] = subjects.loc[p["index"]].astype(str).to_numpy()
    return out


def _metrics(predictions: dict, n_boot: int, seed: int) -> dict:
    from forgetmi.evaluation.bootstrap import bootstrap_ci
    from forgetmi.evaluation.metrics import HEADS, full_metrics

    out = {}
    for part, p in predictions.items():
        out[part] = {}
        for head in HEADS:
            intervals = bootstrap_ci(full_metrics, p["label"], p[f"{head}_logits"], n_boot=n_boot,
                                     seed=seed, groups=p["group"])
            out[part][head] = {name: {"value": _finite(iv.point), "low": _finite(iv.low),
                                      "high": _finite(iv.high)}
                               for name, iv in intervals.items()}
    return out


def unseen_partition(predictions: dict) -> str:
    """The unseen side of the forget-vs-unseen attacks: the holdout (drawn like the forget set,
    trained on by no model) when the data has one, else the TEST fold."""
    return "holdout" if "holdout" in predictions else "test"


def _attacks(predictions: dict, seed: int, batch_size: int,
             n_boot: int = 1000) -> dict | None:
    from forgetmi.evaluation.mia import (attack_features, population_attack, sample_losses,
                                         svc_mia_report)

    if not all(k in predictions for k in ("forget", "retain", "test")):
        return None
    forget, retain, test = predictions["forget"], predictions["retain"], predictions["test"]
    unseen_name = unseen_partition(predictions)
    unseen = predictions[unseen_name]
    result = svc_mia_report(sample_losses(retain), sample_losses(test), sample_losses(forget),
                            batch_size)
    (member, names), (nonmember, _), (target, _) = (attack_features(p)
                                                    for p in (retain, test, forget))
    unseen_features = nonmember if unseen is test else attack_features(unseen)[0]
    population = population_attack(member, nonmember, target, member_groups=retain["group"],
                                   nonmember_groups=test["group"], target_groups=forget["group"],
                                   seed=seed, roc_points=200)
    population["features"] = names
    result["population"] = population
    result["forget_vs_unseen"] = _forget_vs_unseen_loss(forget, unseen, seed, n_boot,
                                                        unseen_name)
    if unseen_name != "test":  # the TEST fold, drawn otherwise, as a secondary comparison
        result["forget_vs_test"] = _forget_vs_unseen_loss(forget, test, seed, n_boot, "test")
    # The release measured its attacks and AUCs on the image head: its figures beside ours.
    result["forget_vs_unseen_image"] = _forget_vs_unseen_loss(forget, unseen, seed, n_boot,
                                                              unseen_name, head="image")
    result["forget_vs_unseen_learned"] = _forget_vs_unseen(target, unseen_features,
                                                           forget["group"], unseen["group"],
                                                           seed, n_boot)
    result["forget_vs_unseen_learned"]["unseen"] = unseen_name
    return json.loads(json.dumps(result, default=float))


def attack_figures(model_dir: str | Path, cfg, n_boot: int = 1000, batch_size: int = 64,
                   mia_batch_size: int = 32) -> dict | None:
    """The membership attacks alone (``evaluate_run``'s ``mia`` block, the same rows and
    seeds) on the model in ``model_dir`` over the data of ``cfg``: e.g. a model's figures
    before it was unlearned, beside those of the model unlearned from it."""
    predictions = _predictions(cfg, Path(model_dir), ("forget", "retain", "test", "holdout"),
                               batch_size)
    return _attacks(predictions, cfg.seed, mia_batch_size, n_boot)


def _forget_vs_unseen_loss(forget: dict, unseen: dict, seed: int, n_boot: int,
                           unseen_name: str, head: str | None = None) -> dict:
    """The headline: the loss-threshold attack's AUC, forget rows vs every unseen row, on each
    row's training loss (every head's cross-entropy, summed), or on one ``head``'s."""
    from forgetmi.evaluation.mia import forget_vs_unseen_loss, sample_losses, training_losses

    if head is None:
        losses, signal = training_losses, ("training loss: the heads' cross-entropies summed "
                                           "(lower = member)")
    else:
        losses, signal = (lambda p: sample_losses(p, head)), (f"{head} head's cross-entropy "
                                                              "(lower = member)")
    out = forget_vs_unseen_loss(losses(forget), losses(unseen),
                                forget_groups=forget["group"], unseen_groups=unseen["group"],
                                seed=seed, n_boot=n_boot, signal=signal)
    out["unseen"] = unseen_name
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _forget_vs_unseen(forget: np.ndarray, unseen: np.ndarray, forget_groups: np.ndarray,
                      unseen_groups: np.ndarray, seed: int, n_boot: int) -> dict:
    """The learned attack (forget rows vs test rows); too few patients for its folds (e.g. a
    one-patient forget request) gives nulls and the reason, not a failed evaluation."""
    from forgetmi.evaluation.mia import forget_vs_unseen_attack

    try:
        out = forget_vs_unseen_attack(forget, unseen, forget_groups=forget_groups,
                                      unseen_groups=unseen_groups, seed=seed,
                                      n_boot=n_boot)
    except ValueError as err:
        logger.warning("forget-vs-unseen attack not computed: %s", err)
        return {"auc": None, "low": None, "high": None, "n_forget": int(len(forget)),
                "n_unseen": int(len(unseen)), "reason": str(err)}
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _gap(metrics: dict, reference: dict) -> dict:
    return {part: {head: {name: (None if v["value"] is None or
                                 reference[part][head].get(name, {}).get("value") is None
                                 else v["value"] - reference[part][head][name]["value"])
                          for name, v in values.items()}
                   for head, values in heads.items()}
            for part, heads in metrics.items() if part in reference}


def _check_reference(run: Path, cfg, reference: Path, role: str):
    """A retrained reference must be a finished retraining that never saw this run's forget
    or holdout rows: the same forget set and holdout files. Returns its config."""
    ref_cfg = _run_config(reference)  # a finished run, or a clear error
    job = RunFolder(reference).timing() or {}
    if job.get("job") != "retrain":
        raise ForgetMIError(f"{reference}: {role} must be a finished retraining (its "
                            f"timing.json records job {job.get('job')!r})")
    for key in ("forget_set", "holdout"):
        mine, theirs = cfg.data.path(key), ref_cfg.data.path(key)
        if (mine and Path(mine).resolve()) != (theirs and Path(theirs).resolve()):
            raise ForgetMIError(f"{reference}/config.yaml: data.{key} is {theirs}, but {run} "
                                f"uses {mine}; a {role} must leave out the same rows")
    return ref_cfg


def _scored(predictions: dict) -> dict:
    from forgetmi.evaluation.mia import training_losses
    return {part: {"loss": training_losses(p), "label": p["label"],
                   "logits": p["joint_logits"], "group": p["group"]}
            for part, p in predictions.items()}


def _peers(run: Path, cfg, references: list[Path]) -> list[Path]:
    """The checked calibration references, less those of the run's own seed (its twin)."""
    return [ref for ref in references
            if ref.resolve() != run.resolve()
            and _check_reference(run, cfg, ref, "a calibration reference").seed != cfg.seed]


def _calibration(cfg, predictions: dict, peers: list[Path], batch_size: int,
                 n_boot: int) -> dict:
    """The calibrated attack against the retrained ``peers`` (other seeds)."""
    from forgetmi.evaluation.calibrated import calibrated_attack
    from forgetmi.evaluation.mia import training_losses

    unseen = unseen_partition(predictions)
    if not peers:
        return {"auc": None, "n_references": 0,
                "reason": "no retrained reference of another seed (give --references)"}
    sums = {"forget": 0.0, unseen: 0.0}
    for ref in peers:
        ref_pred = _predictions(cfg, _model_dir(ref), ("forget", unseen), batch_size)
        for part in sums:
            sums[part] = sums[part] + training_losses(ref_pred[part])
    forget, other = predictions["forget"], predictions[unseen]
    out = calibrated_attack(training_losses(forget), training_losses(other),
                            sums["forget"] / len(peers), sums[unseen] / len(peers),
                            forget_groups=forget["group"], unseen_groups=other["group"],
                            n_references=len(peers), seed=cfg.seed, n_boot=n_boot)
    out["unseen"] = unseen
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def evaluate_run(run: str | Path, retrained: str | Path | None = None, n_boot: int = 1000,
                 batch_size: int = 64, mia_batch_size: int = 32, config: str | None = None,
                 overrides: list[str] | None = None,
                 references: list[str | Path] | None = None,
                 out: str | Path | None = None) -> dict:
    """Score the model in ``run`` and write ``metrics.json`` into ``out`` (default ``run``);
    returns what was written.

    ``run`` is a run folder or a bare model folder; ``config`` (for a bare model folder) and
    ``overrides`` set the data it is scored on: an original shared by several forget sets is
    scored once per set, ``--forget_set=X`` with its own ``out`` (checked: it trained on the
    rows the overridden data gives an original). ``retrained``: the retrained model of the same
    seed (gaps, paired differences, forget quality). ``references``: retrained models for the
    calibrated attack (those of the run's own seed are left out)."""
    from forgetmi.evaluation.calibrated import forget_quality, paired_differences
    from forgetmi.evaluation.metrics import full_metrics
    from forgetmi.evaluation.mia import logit_similarity
    from forgetmi.evaluation.score import score

    run = Path(run)
    if config is None and as_run_folder(run) != run:
        run = as_run_folder(run)
        logger.info("evaluating the run %s (the model's own config.yaml gives the data)", run)
    retrained = as_run_folder(retrained) if retrained is not None else None
    references = [as_run_folder(r) for r in references or []]
    cfg = _run_config(run, config, overrides)
    # Every check before the first write: a bad reference leaves no metrics.json behind.
    if overrides and not is_model_folder(run) and RunFolder(run).job == "train":
        from forgetmi.models.provenance import check_original_rows
        # As recorded, but where the data is now (an older run's relative root, given again).
        moved = [o for o in overrides if o.split("=")[0].lstrip("-") in ("data.root", "root")]
        check_original_rows(_run_config(run, None, moved), cfg, run)
    if retrained is not None:
        _check_reference(run, cfg, Path(retrained), "the retrained reference")
    peers = _peers(run, cfg, [Path(r) for r in references or []])
    result = {"schema": SCHEMA, "run": str(run), **describe(run, cfg)}
    predictions = _predictions(cfg, _model_dir(run), PARTITIONS, batch_size)
    logger.info("evaluating %s: %s", result["label"],
                ", ".join(f"{k} {len(v['label'])} rows" for k, v in predictions.items()))
    result["metrics"] = _metrics(predictions, n_boot, cfg.seed)
    result["mia"] = _attacks(predictions, cfg.seed, mia_batch_size, n_boot)
    if result["mia"] is not None and references:
        result["mia"]["calibrated"] = _calibration(cfg, predictions, peers, batch_size, n_boot)
    result["gap"] = result["logit_similarity"] = result["paired"] = None
    result["forget_quality"] = result["score"] = None
    if retrained is not None:
        retrained = Path(retrained)
        # The reference scores this run's partitions: the gap compares the same rows.
        reference = _predictions(cfg, _model_dir(retrained), PARTITIONS, batch_size)
        point = {part: {head: {k: {"value": _finite(v)} for k, v in
                               full_metrics(p["label"], p[f"{head}_logits"]).items()}
                        for head in ("image", "text", "joint")}
                 for part, p in reference.items()}
        result["gap"] = _gap(result["metrics"], point)
        if "retain" in reference:
            result["logit_similarity"] = logit_similarity(predictions["retain"]["joint_logits"],
                                                          reference["retain"]["joint_logits"])
        if "forget" in reference:
            judged, ref = _scored(predictions), _scored(reference)
            result["forget_quality"] = forget_quality(judged["forget"]["loss"],
                                                      ref["forget"]["loss"])
            result["paired"] = paired_differences(judged, ref,
                                                  unseen=unseen_partition(predictions),
                                                  seed=cfg.seed, n_boot=n_boot)
    result["score"] = score(result["paired"], run, retrained)
    write_json(Path(out or run) / "metrics.json", result)
    logger.info("%s", summary_line(result))
    _to_wandb(run, cfg, result)
    return result


def _to_wandb(run: Path, cfg, result: dict) -> None:
    """The evaluation's figures (the score first) into the summary of the W&B run that made
    the model; a bare model folder has none. metrics.json is written before: a W&B failure
    loses nothing but the summary."""
    from forgetmi.evaluation.score import summary_figures
    from forgetmi.utils.tracking import log_summary

    job = RunFolder(run).job if not is_model_folder(run) else None
    if job is None:
        return
    try:
        log_summary(run, cfg.tracking, job, cfg.seed, summary_figures(result))
    except Exception as err:  # noqa: BLE001 - W&B's own errors are many; the metrics are saved
        logger.warning("%s: evaluation not put into the W&B run (%s: %s); metrics.json holds "
                       "it", run, type(err).__name__, err)


def summary_line(result: dict) -> str:
    def value(part, metric):
        v = result["metrics"].get(part, {}).get("joint", {}).get(metric, {}).get("value")
        return "—" if v is None else f"{v:.3f}"
    mia = result.get("mia") or {}
    svc = mia.get("svc_mia_per_sample")
    attack = (mia.get("population") or {}).get("auc")
    headline = mia.get("forget_vs_unseen") or {}
    calibrated = (mia.get("calibrated") or {}).get("auc")
    forgotten = ("—" if headline.get("auc") is None else
                 f"{headline['auc']:.3f} [{_or_dash(headline.get('low'))}, "
                 f"{_or_dash(headline.get('high'))}]")
    return (f"{result['label']}: forget-vs-{headline.get('unseen', 'unseen')} attack AUC "
            f"{forgotten} (0.5 = forgotten as if never seen), calibrated "
            f"{_or_dash(calibrated)}, forget AUC {value('forget', 'auc')} F1 {value('forget', 'f1')}, "
            f"test AUC {value('test', 'auc')} F1 {value('test', 'f1')}, MIA (SVC) "
            f"{'—' if svc is None else f'{svc:.3f}'}, population attack AUC "
            f"{'—' if attack is None else f'{attack:.3f}'}")


def _or_dash(value) -> str:
    return "—" if value is None else f"{value:.3f}"
