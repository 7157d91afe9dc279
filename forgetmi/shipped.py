"""The configs, launchers and Slurm templates that ship with forgetmi, wherever it is installed.

In a checkout they are the repository's top-level ``configs/``, ``launch/`` and ``slurm/``; a
wheel carries copies inside the package (``forgetmi/_shipped/``, written by setup.py). A
relative path a user gives (``configs/accelerate/zero2.yaml``, ``launch/unlearn.py``) means the
folder the command was typed in first, and falls back to the shipped copy, never to
site-packages' parent.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi")

FOLDERS = ("configs", "launch", "slurm")
PACKAGED = Path(__file__).resolve().parent / "_shipped"
CHECKOUT = Path(__file__).resolve().parents[1]
# Editor and interpreter leftovers that are no part of what ships.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".gitkeep")


def root() -> Path:
    """The folder holding ``configs/``, ``launch/`` and ``slurm/``: the installed copy, else the
    checkout this package runs from."""
    if (PACKAGED / "configs").is_dir():
        return PACKAGED
    if (CHECKOUT / "configs").is_dir() and (CHECKOUT / "launch").is_dir():
        return CHECKOUT
    raise ForgetMIError(f"the shipped configs are missing: neither {PACKAGED} nor {CHECKOUT} "
                        "holds configs/ (reinstall forgetmi)")


def resolve(path: str | Path, what: str, cwd: str | Path | None = None) -> Path:
    """``path`` as the user meant it: absolute as given, else relative to ``cwd`` (the folder
    the command was typed in), else to the shipped files. Refused in one line naming the file
    and where it was looked for."""
    path = Path(path).expanduser()
    if path.is_absolute():
        if path.exists():
            return path
        raise ForgetMIError(f"{what} not found: {path}")
    here = Path(cwd or os.getcwd())
    candidates = [here / path]
    try:
        if root() != here:
            candidates.append(root() / path)
    except ForgetMIError:
        pass
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    looked = " and ".join(str(c.parent) for c in candidates)
    raise ForgetMIError(f"{what} not found: {path} (looked in {looked}); give an absolute path")


def locate(path: str | Path) -> Path:
    """A config file named on the command line: as typed when it is there (or absolute), else
    the shipped copy of that name (``configs/experiments/demo.yaml`` after a wheel install),
    else as typed, for the reader's own "not found"."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    try:
        candidate = root() / path
    except ForgetMIError:
        return path
    if candidate.is_file():
        logger.info("%s: not in %s; reading the shipped copy %s", path, os.getcwd(), candidate)
        return candidate
    return path


def listing() -> list[str]:
    """Every shipped file, relative to the shipped root (``configs/accelerate/zero2.yaml`` ...)."""
    base = root()
    return sorted(str(p.relative_to(base)) for folder in FOLDERS for p in (base / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix != ".pyc" and p.name != ".gitkeep")


# An Accelerate config's DeepSpeed JSON, given relative to the shipped root.
DEEPSPEED_FILE = re.compile(r"^(\s*deepspeed_config_file:\s*)(\S+)(.*)$", re.MULTILINE)


def copy(dest: str | Path, force: bool = False) -> list[Path]:
    """Copy the shipped folders into ``dest``; returns the folders written.

    The copied Accelerate configs name their DeepSpeed JSON by its absolute path in ``dest``,
    so they launch from any folder and an edit of the copied JSON is the one that runs.
    Existing files are refused (nothing written) unless ``force``.
    """
    base, dest = root(), Path(dest).resolve()
    clashes = [name for name in listing() if (dest / name).exists()]
    if clashes and not force:
        raise ForgetMIError(f"{dest / clashes[0]} exists ({len(clashes)} shipped file(s) would be "
                            "replaced): copy elsewhere, or pass --force")
    written = []
    for folder in FOLDERS:
        shutil.copytree(base / folder, dest / folder, ignore=IGNORED, dirs_exist_ok=True)
        written.append(dest / folder)
    for config in (dest / "configs" / "accelerate").glob("*.yaml"):
        text = config.read_text(encoding="utf-8")
        pinned = DEEPSPEED_FILE.sub(
            lambda m: m.group(1) + (str(dest / m.group(2)) if not Path(m.group(2)).is_absolute()
                                    else m.group(2)) + m.group(3), text)
        if pinned != text:
            config.write_text(pinned, encoding="utf-8")
    return written
