"""Removing forgotten patients' data from the package's own caches.

Every decoded-image cache (each resolution) and every token cache under a data root holds a row
per image or study of the split. Purging overwrites the forgotten rows with zeros in place and
records their positions in the cache's index, with the file that lists the forgotten patients
(a forget workspace's ``forgotten.csv``), so a later job whose data still holds them stops at
its start, naming that file for ``--data.exclude`` (:func:`forgetmi.data.prepare.check_purged`),
and a read of them fails loudly instead of returning zeros. The other rows, and the caches'
fingerprints, are untouched: runs on the remaining patients keep using them. (Noisy copies of
the forget set are generated on the fly and never stored.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from forgetmi.utils.atomic import write_json

logger = logging.getLogger("forgetmi.data")


# The index entries: the purged rows' positions, and the lists naming the forgotten patients.
PURGED, PURGED_LISTS = "purged", "purged_lists"


def _record(index_path: Path, index: dict, positions: list[int], listed: str | None) -> None:
    index[PURGED] = sorted(set(index.get(PURGED, [])) | set(positions))
    if listed is not None:
        index[PURGED_LISTS] = sorted(set(index.get(PURGED_LISTS, [])) | {listed})
    write_json(index_path, index)


def purge_image_cache(folder: Path, dicom_ids: set[str], listed: str | None = None) -> int:
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text())
    positions = [i for i, d in enumerate(index["dicom_ids"]) if str(d) in dicom_ids]
    if positions:
        array = np.load(folder / "images.npy", mmap_mode="r+")
        for i in positions:
            array[i] = 0
        array.flush()
        del array
        _record(index_path, index, positions, listed)
    return len(positions)


def purge_token_cache(folder: Path, study_ids: set[int], listed: str | None = None) -> int:
    index_path = folder / "index.json"
    index = json.loads(index_path.read_text())
    positions = [i for i, s in enumerate(index["study_ids"]) if int(s) in study_ids]
    if positions:
        ids = np.load(folder / "input_ids.npy", mmap_mode="r+")
        ids[positions] = 0
        ids.flush()
        del ids
        lengths = np.load(folder / "lengths.npy")
        lengths[positions] = 0
        tmp = folder / ".lengths.tmp.npy"
        np.save(tmp, lengths)
        tmp.replace(folder / "lengths.npy")
        _record(index_path, index, positions, listed)
    return len(positions)


def purge_caches(cache_root: str | Path, rows: pd.DataFrame, keep_studies: set[int],
                 listed: str | Path | None = None) -> list[dict]:
    """Purge ``rows`` (split rows of the forgotten patients) from every cache under
    ``cache_root``; studies in ``keep_studies`` (shared with patients who stay) keep their
    tokens. ``listed``: the file listing the forgotten patients, recorded with the purge (the
    one later jobs leave out with ``--data.exclude``). Returns what was removed: per cache
    folder, the kind and the number of rows."""
    cache_root = Path(cache_root)
    listed = None if listed is None else os.path.abspath(listed)
    dicom_ids = set(rows["dicom_id"].astype(str))
    study_ids = set(int(s) for s in rows["study_id"]) - keep_studies
    removed = []
    for folder in sorted(cache_root.glob("images-*")):
        if (folder / "index.json").is_file():
            removed.append({"cache": folder.name, "kind": "decoded images",
                            "rows": purge_image_cache(folder, dicom_ids, listed)})
    for folder in sorted(cache_root.glob("tokens-*")):
        if (folder / "index.json").is_file():
            removed.append({"cache": folder.name, "kind": "tokenised reports",
                            "rows": purge_token_cache(folder, study_ids, listed)})
    logger.info("purged %s", ", ".join(f"{r['rows']} {r['kind']} from {r['cache']}"
                                       for r in removed) or "nothing (no caches)")
    return removed
