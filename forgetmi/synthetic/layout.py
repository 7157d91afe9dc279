"""Where the files of a dataset folder live (the stand-in's layout is the release's layout)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from forgetmi.errors import DataError

IMAGES = "images"
REPORTS = "all_data.tsv"
SPLIT = "split.csv"
SYNONYMS = "Synonyms.csv"
MANIFEST = "manifest.json"
HOLDOUT = "holdout.csv"
FORGET_PATTERN = re.compile(r"^forget_set_(\d+)per\.csv$")


def forget_set_name(percent: int) -> str:
    return f"forget_set_{percent}per.csv"


@dataclass(frozen=True)
class DatasetPaths:
    """Paths of one dataset folder: images (MIMIC layout), reports, split, forget sets, ..."""

    root: Path
    img_dir: Path
    reports: Path
    split: Path
    forget_sets: dict[int, Path] = field(default_factory=dict)
    synonyms: Path | None = None
    manifest: Path | None = None
    holdout: Path | None = None

    @classmethod
    def from_root(cls, root: str | os.PathLike) -> "DatasetPaths":
        """Rebuild the paths of a folder written by ``generate_dataset``; checks they exist."""
        root = Path(root)
        if not root.is_dir():
            raise DataError("dataset folder not found", root)
        for name in (IMAGES, REPORTS, SPLIT):
            if not (root / name).exists():
                raise DataError(f"not a dataset folder: {name} is missing", root)
        forget_sets = {}
        for path in root.iterdir():
            match = FORGET_PATTERN.match(path.name)
            if match:
                forget_sets[int(match.group(1))] = path
        return cls(root=root, img_dir=root / IMAGES, reports=root / REPORTS, split=root / SPLIT,
                   forget_sets=dict(sorted(forget_sets.items())),
                   synonyms=root / SYNONYMS if (root / SYNONYMS).is_file() else None,
                   manifest=root / MANIFEST if (root / MANIFEST).is_file() else None,
                   holdout=root / HOLDOUT if (root / HOLDOUT).is_file() else None)
