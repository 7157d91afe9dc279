"""A model's predictions on the partitions of one dataset, kept with the data's other caches.

A retrained model (the only kind kept) is the reference of every run of its size and seed, and
calibrates the attack of every run of the other seeds: a five-seed protocol of eight methods
would predict each one dozens of times. The first evaluation that needs them keeps them under
``<data cache>/predictions/``; the rest read them. The key covers the model's weights and all
that decides the rows and their inputs (the data settings, the files' sizes and times, the seed
that carves validation, the batch size), so a changed input is a new entry, never a stale one.
Patient ids are not stored: the caller adds each row's grouping from the split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger("forgetmi.evaluation")

VERSION = 1
_MODEL_FILES = ("config.json", "model.safetensors")


def _stat(path: Path | None):
    if path is None or not path.exists():
        return None
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def key(cfg, model_dir: Path, parts: tuple[str, ...], batch_size: int) -> str:
    """The entry's name: what the predictions depend on, hashed."""
    from forgetmi.config import to_dict
    from forgetmi.engine.checkpoint import sha256_file

    data = cfg.data
    files = [_stat(data.path(name)) for name in ("split", "reports", "forget_set", "holdout",
                                                 "exclude")]
    files += [_stat(data.resolve(p)) for p in data.val_avoid]
    what = {"version": VERSION, "data": to_dict(data), "seed": cfg.seed, "parts": list(parts),
            "batch_size": batch_size, "files": files,
            "model": [sha256_file(Path(model_dir) / name) for name in _MODEL_FILES
                      if (Path(model_dir) / name).is_file()]}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def path_for(cfg, name: str) -> Path:
    return cfg.data.resolved_cache_dir() / "predictions" / f"{name}.npz"


def load(path: Path) -> dict[str, dict[str, np.ndarray]] | None:
    """The stored predictions by partition, or None (absent or unreadable: predict again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            out: dict[str, dict[str, np.ndarray]] = {}
            for entry in stored.files:
                part, _, field = entry.partition("/")
                out.setdefault(part, {})[field] = stored[entry]
        return out
    except (OSError, ValueError) as err:
        logger.debug("prediction cache %s unreadable (%s); predicting again", path, err)
        return None


def save(path: Path, predictions: dict[str, dict[str, np.ndarray]]) -> None:
    """Write atomically; a failure to keep them costs only the next evaluation's time."""
    from forgetmi.utils.atomic import atomic_path

    arrays = {f"{part}/{field}": value for part, fields in predictions.items()
              for field, value in fields.items() if field != "group"}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as err:
        logger.warning("could not keep predictions at %s: %s", path, err)
