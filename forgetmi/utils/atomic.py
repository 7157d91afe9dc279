"""Write-then-rename helpers: a reader never sees a half-written file or folder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from forgetmi.errors import OutputError

logger = logging.getLogger(__name__)


def check_target(target: str | os.PathLike, folder: bool = False, replace: bool = False) -> None:
    """Refuse, before anything is written, a ``target`` that :func:`atomic_path` may not replace:
    a folder where a file is to go, anything but a folder where a folder is to go, and a folder
    unless ``replace`` (the caller's own: a cache it rebuilds, a model it saves again)."""
    target = Path(target)
    _check_parent(target)
    if target.is_dir():
        if not folder:
            raise OutputError(f"{target}: is a folder; expected a file path to write (choose "
                              "another path)")
        if target.is_symlink():
            raise OutputError(f"{target}: is a link to a folder; refusing to replace it")
        if not replace:
            raise OutputError(f"{target}: folder exists; refusing to replace it (choose another "
                              "path)")
    elif folder and os.path.lexists(target):
        raise OutputError(f"{target}: exists and is not a folder; expected a folder path to "
                          "write (choose another path)")


def refuse_to_replace(targets: Iterable[str | os.PathLike], force: bool = False,
                      flag: str = "--force") -> None:
    """Before anything is written: refuse a file among ``targets`` that already exists, unless
    ``force`` (the user's explicit word, or the caller's knowledge that the files are an earlier
    run of its own: see :func:`written_json`)."""
    for target in map(Path, targets):
        check_target(target)
        if os.path.lexists(target) and not force:
            raise OutputError(f"{target}: exists and was not written by this command; refusing "
                              f"to replace it (choose another path, or give {flag})")


def written_json(path: Path, keys: Iterable[str]) -> bool:
    """Whether ``path`` is a JSON object holding ``keys``: how a command knows a file as one it
    wrote itself, which a rerun may replace."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and set(keys) <= set(doc)


def _check_parent(target: Path) -> None:
    """The nearest existing folder above ``target`` must be a folder, not a file in the way."""
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutputError(f"{target}: cannot create its folder: {parent} is a file, "
                                  "not a folder")
            return


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{target}: cannot create its folder (a file is in the way)") from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, folder: bool = False,
                replace: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    ``folder``: the caller writes a folder there, else a file. A file replaces an existing file;
    a folder replaces an existing folder only with ``replace``. Anything else is refused by
    :func:`check_target` before the caller writes a byte, so a file never silently replaces a
    folder nor a folder a file. On error the temporary is removed and ``target`` is left as it
    was.
    """
    target = Path(target)
    check_target(target, folder, replace)
    _make_parent(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    # mkdtemp gives a folder; callers writing a file write to tmp/"payload" via a path we hand out.
    payload = tmp / "payload"
    try:
        yield payload
        if not payload.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if payload.is_dir() != folder:
            raise OutputError(f"{target}: a {'file' if folder else 'folder'} was written where a "
                              f"{'folder' if folder else 'file'} was expected; nothing replaced")
        check_target(target, folder, replace)  # the target may have changed meanwhile
        if folder and target.is_dir():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(payload, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(payload, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0666 less this process's umask (read from
    /proc where it can be, so the umask is never changed, even for a moment)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def write_json(target: str | os.PathLike, obj) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(target: str | os.PathLike, frame, **kwargs) -> Path:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, **kwargs)
    return Path(target)


@contextlib.contextmanager
def build_lock(target: str | os.PathLike) -> Iterator[None]:
    """Serialise builders of one folder (e.g. Slurm array tasks sharing a cache): an exclusive
    lock on a file beside ``target``, so the one that waited can reuse what the first built."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock, builds stay atomic regardless
            yield
            return
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """Identity of a file as it is now (inode, mtime), or None: tells whether another process
    replaced it meanwhile."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def remove_stale_temporaries(target: str | os.PathLike) -> None:
    """Delete the temporaries :func:`atomic_path` left beside ``target`` when a build was killed
    (call only while holding :func:`build_lock`)."""
    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        logger.info("removing the remains of an interrupted build: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
