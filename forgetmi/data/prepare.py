"""From a :class:`~forgetmi.config.DataConfig` to validated partitions and warm caches.

This is the one place that turns files on disk into what training, unlearning and evaluation
consume, so every entry point validates and audits the data the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from forgetmi.config import DataConfig
from forgetmi.data import formats
from forgetmi.data.splits import (AuditReport, Partitions, audit_partitions, build_partitions,
                                  check_forget_set)
from forgetmi.errors import CacheError, DataError

logger = logging.getLogger("forgetmi.data")
_SAID: set[str] = set()   # data summaries already logged by this process


@dataclass
class PreparedData:
    config: DataConfig
    split: pd.DataFrame
    reports: pd.DataFrame
    partitions: Partitions
    audit: AuditReport
    image_cache: object = None   # forgetmi.data.cache.ImageCache
    token_cache: object = None   # forgetmi.data.text.TokenCache
    timings: dict = field(default_factory=dict)


def load_partitions(config: DataConfig, seed: int = 0) -> PreparedData:
    """Read and validate the split, forget set and reports; partition; audit (raises on leakage)."""
    split_path = config.path("split")
    split = formats.read_split(split_path)
    forget_path = config.path("forget_set")
    forget = formats.read_forget_set(forget_path) if forget_path is not None else None
    holdout_path = config.path("holdout")
    holdout = formats.read_forget_set(holdout_path) if holdout_path is not None else None
    reports = formats.read_reports(config.path("reports"))
    avoided = _val_avoided(config, split)
    kept = _without_excluded(split, config.path("exclude"), forget)
    parts = build_partitions(kept, forget, config.val_fraction, seed, forget_path=forget_path,
                             holdout=holdout, holdout_path=holdout_path, val_avoid=avoided)
    audit = audit_partitions(parts, kept)
    audit.raise_if_failed()
    missing = ~split["study_id"].isin(reports["study_id"])
    if missing.any():
        i = int(missing.to_numpy().nonzero()[0][0])
        raise DataError(f"study has no report in {config.path('reports')} "
                        f"({int(missing.sum())} row(s) without a report)", split_path, i + 2,
                        "study_id")
    summary = ("data: %d rows, %d patients; forget %d rows / %d patients%s" % (
        len(split), split["subject_id"].nunique(), len(parts.forget),
        parts.forget["subject_id"].nunique(),
        f"; holdout {len(parts.holdout)} rows / {parts.holdout['subject_id'].nunique()} "
        "patients (trained on by no model)" if len(parts.holdout) else ""))
    # Once per process and data: a demo or an evaluation loads the same partitions many times.
    logger.log(logging.DEBUG if summary in _SAID else logging.INFO, summary)
    _SAID.add(summary)
    return PreparedData(config=config, split=split, reports=reports, partitions=parts, audit=audit)


def _val_avoided(config: DataConfig, split: pd.DataFrame) -> frozenset:
    """The patients of every forget set in ``data.val_avoid``, each file checked as a forget
    set against the whole split (an excluded patient may still be another size's)."""
    patients: set = set()
    for entry in config.val_avoid:
        path = config.resolve(entry)
        rows = formats.read_forget_set(path)
        check_forget_set(split, rows, path)
        patients |= set(rows["subject_id"])
    return frozenset(patients)


def original_rows(config: DataConfig, seed: int) -> pd.Index:
    """The dicom_ids the original model of ``config`` and ``seed`` trains on: every row but
    validation, holdout and TEST (and excluded patients')."""
    parts = load_partitions(config, seed).partitions
    return pd.Index(sorted(parts.original_train["dicom_id"]))


def _without_excluded(split: pd.DataFrame, exclude_path: Path | None,
                      forget: pd.DataFrame | None) -> pd.DataFrame:
    """The split less the rows of excluded patients (shadow models train on part of the data).

    The full split still indexes the caches, so excluded rows keep their cache entries and a
    run on a subset shares the caches of a run on everything.
    """
    if exclude_path is None:
        return split
    excluded = formats.read_forget_set(exclude_path)
    patients = set(excluded["subject_id"])
    unknown = ~excluded["subject_id"].isin(split["subject_id"])
    if unknown.any():
        count = excluded.loc[unknown, "subject_id"].nunique()
        raise DataError(f"excluded patient absent from the split ({count} such patient(s))",
                        exclude_path, int(unknown.to_numpy().nonzero()[0][0]) + 2, "subject_id")
    test = set(split.loc[split["fold"] == "TEST", "subject_id"])
    if patients & test:
        raise DataError(f"{len(patients & test)} excluded patient(s) in the TEST fold; only "
                        "training patients can be excluded", exclude_path, field="subject_id")
    if forget is not None and patients & set(forget["subject_id"]):
        raise DataError(f"{len(patients & set(forget['subject_id']))} patient(s) both excluded "
                        "and in the forget set", exclude_path, field="subject_id")
    kept = split[~split["subject_id"].isin(patients)]
    logger.info("excluded %d rows of %d patients", len(split) - len(kept), len(patients))
    return kept


def ensure_caches(data: PreparedData, text_encoder: str | None = None,
                  rebuild: bool = False) -> PreparedData:
    """Open the image and token caches, building (or rebuilding) them when absent or stale.

    ``text_encoder`` is the model's BERT folder whose tokenizer is used (None or "tiny": the
    packaged MiniLM's). The image cache is built in ``config.preprocessing`` mode (None =
    forgetmi); the two modes live in separate folders and their fingerprints differ.
    """
    from forgetmi.data import cache, text

    config = data.config
    cache_root = config.resolved_cache_dir()
    crop = config.crop_size or config.image_size
    mode = config.preprocessing or "forgetmi"
    image_dir = cache_root / (f"images-{config.image_size}-crop{crop}"
                              + ("" if mode == "forgetmi" else f"-{mode}"))
    start = time.perf_counter()
    image_cache = None
    if not rebuild:
        try:
            image_cache = cache.ImageCache.open(image_dir, expect=cache.expected_meta(
                data.split, config.path("img_dir"), config.image_size, crop, config.image_ext,
                mode))
        except CacheError as err:
            if image_dir.exists():
                logger.info("image cache is stale (%s); rebuilding", err)
    if image_cache is None:
        image_cache = cache.build_image_cache(
            data.split, config.path("img_dir"), image_dir, config.image_size, crop_size=crop,
            ext=config.image_ext, workers=config.workers, source=config.path("split"),
            preprocessing=mode)
    data.timings["image_cache_s"] = time.perf_counter() - start

    start = time.perf_counter()
    encoder = (text.default_text_encoder_path() if text_encoder in (None, "", "tiny")
               else Path(text_encoder))
    token_dir = cache_root / f"tokens-{text.encoder_tag(encoder)}-{config.max_length}"
    token_cache = None
    if not rebuild:
        try:
            token_cache = text.TokenCache.open(token_dir, expect=text.expected_meta(
                data.reports, encoder, config.max_length, table=data.split))
        except CacheError as err:
            if token_dir.exists():
                logger.info("token cache is stale (%s); rebuilding", err)
    if token_cache is None:
        token_cache = text.build_token_cache(data.reports, data.split, token_dir, encoder,
                                             config.max_length, source=config.path("split"))
    data.timings["token_cache_s"] = time.perf_counter() - start
    data.image_cache, data.token_cache = image_cache, token_cache
    return data


def check_purged(data: PreparedData) -> None:
    """Refuse, at the start, data holding patients a forget request purged from the caches
    (their rows would fail mid-epoch), in one line naming the file to leave them out with:
    the forgotten patients' list the request kept."""
    frames = [frame for _, frame in data.partitions.items() if frame is not None and len(frame)]
    if not frames:
        return
    rows = pd.concat(frames)
    hit = pd.Series(False, index=rows.index)
    images, tokens = data.image_cache, data.token_cache
    if images is not None and images.purged:
        hit |= rows["dicom_id"].map(lambda d: images.index_of(d) in images.purged)
    if tokens is not None and tokens.purged:
        hit |= rows["study_id"].map(lambda s: tokens.index_of(s) in tokens.purged)
    if not hit.any():
        return
    lists = sorted(set(getattr(images, "purged_lists", [])) | set(getattr(tokens, "purged_lists",
                                                                          [])))
    where = (f"--data.exclude={lists[0]}" if len(lists) == 1 else
             f"--data.exclude=<one file listing the patients of {' and '.join(lists)}>" if lists
             else "--data.exclude=<the forget workspace's forgotten.csv>")
    raise CacheError(f"{rows.loc[hit, 'subject_id'].nunique()} patient(s) of this run's data "
                     f"were forgotten by a request (forgetmi forget) and purged from the caches "
                     f"in {data.config.resolved_cache_dir()}: leave them out with {where}")


def build_datasets(cfg, accelerator):
    """Audited partitions of ``cfg`` (an ExperimentConfig) and their datasets, for training,
    unlearning and evaluation alike; the caches are built once, by the main process. Data
    holding patients a forget request purged is refused here (:func:`check_purged`)."""
    from forgetmi.data.dataset import EdemaDataset

    data = load_partitions(cfg.data, cfg.seed)
    with accelerator.main_process_first():
        ensure_caches(data, cfg.model.text_encoder)
    check_purged(data)
    datasets = {name: EdemaDataset(frame, data.image_cache, data.token_cache,
                                   length_bucket=cfg.data.length_bucket)
                for name, frame in data.partitions.items() if len(frame)}
    return data, datasets


def noisy_forget_dataset(cfg, data: PreparedData):
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
                        perturb=perturber, reports=data.reports.set_index("study_id")["text"],
                        length_bucket=cfg.data.length_bucket)
