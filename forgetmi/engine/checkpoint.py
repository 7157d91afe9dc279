"""The stable ``latest`` checkpoint: written by all ranks into a temporary folder, checksummed,
then swapped in by rank 0 with renames, so a crash at any moment leaves either the previous or
the new checkpoint complete, never a half-written one that reads as valid.

``train.keep_checkpoints`` N > 1 keeps the N - 1 checkpoints before the latest too, as
``update-NNNNNNN`` (the optimizer update they were taken at); a run resumes from ``latest``
only. With 0 (the default) a finished run's checkpoints are deleted (:func:`remove_checkpoints`):
its model stays, the optimizer state it no longer needs goes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import gather_object

from forgetmi.errors import ForgetMIError

logger = logging.getLogger("forgetmi.engine")

LATEST = "latest"
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
# Trainer-state entries that differ by rank: each rank sums the losses of its own batches.
PER_RANK = ("epoch_sums", "epoch_counts")


class CheckpointError(ForgetMIError):
    """A checkpoint is missing, damaged, or does not verify against its manifest."""


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def save_latest(accelerator: Accelerator, root: Path, trainer_state: dict,
                keep: int = 1) -> Path:
    """Collective: every rank calls it (DeepSpeed writes one optimizer shard per rank).
    ``keep``: how many checkpoints are kept, this one included (at least this one)."""
    root = Path(root)
    tmp, latest, old = root / ".latest.tmp", root / LATEST, root / ".latest.old"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    # Every rank's own sums, listed by rank: rank 0's alone would give the others its means.
    ranks = gather_object([{k: trainer_state[k] for k in PER_RANK if k in trainer_state}])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainer_state = {**trainer_state, **{k: [r[k] for r in ranks] for k in ranks[0]}}
        (tmp / STATE).write_text(json.dumps(trainer_state, indent=2))
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=2))
        shutil.rmtree(old, ignore_errors=True)
        if latest.exists():
            os.replace(latest, old)
        os.replace(tmp, latest)
        _retire(root, old, keep, trainer_state["updates"])
    accelerator.wait_for_everyone()
    return latest


KEPT = "update-"   # earlier checkpoints kept under keep_checkpoints > 1: update-0000120


def _retire(root: Path, old: Path, keep: int, updates: int) -> None:
    """The checkpoint ``latest`` replaced (now ``old``): kept as ``update-N`` while ``keep``
    allows (one taken at the same update as the new one is the same point: dropped), and the
    kept ones beyond ``keep - 1`` deleted, oldest first."""
    if old.is_dir():
        try:
            before = int(json.loads((old / STATE).read_text())["updates"])
        except (OSError, ValueError, KeyError, TypeError):
            before = None
        if keep > 1 and before is not None and before != updates:
            target = root / f"{KEPT}{before:07d}"
            shutil.rmtree(target, ignore_errors=True)
            os.replace(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    kept = kept_checkpoints(root)
    for folder in kept[:max(len(kept) - (keep - 1), 0)]:
        shutil.rmtree(folder, ignore_errors=True)


def kept_checkpoints(root: Path) -> list[Path]:
    """The earlier checkpoints kept beside ``latest``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(KEPT) and p.name[len(KEPT):].isdigit())


def remove_checkpoints(root: Path) -> int:
    """Delete the checkpoints this engine wrote under ``root`` (``latest``, the kept ones and
    the remains of an interrupted swap), and ``root`` itself if nothing else is in it; the
    bytes freed."""
    root = Path(root)
    freed = 0
    for folder in [root / LATEST, root / ".latest.old", root / ".latest.tmp",
                   *kept_checkpoints(root)]:
        if folder.is_dir():
            freed += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    try:
        root.rmdir()
    except OSError:
        pass   # absent, or holding files of someone else's: left as they are
    return freed


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint: ``latest``, or the previous one if a swap was cut short."""
    root = Path(root)
    for candidate in (root / LATEST, root / ".latest.old"):
        if (candidate / MANIFEST).is_file() and (candidate / STATE).is_file():
            return candidate
    return None


def verify(folder: Path) -> dict:
    """Check every file against the manifest; return the trainer state."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder}: unreadable checkpoint metadata ({err})") from None
    for name, digest in manifest.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: checkpoint file {name} is missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{folder}: checkpoint file {name} does not match its checksum "
                                  "(damaged or modified); refusing to load it")
    return state


# What every checkpoint's per-rank RNG file holds (accelerate's save_state).
RNG_FILE = "random_states_{rank}.pkl"
RNG_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")
# Advice that ends every refusal of a checkpoint that cannot be resumed.
AFRESH = "start afresh with --resume=false or another output_dir"


def _load_pickle(path: Path):
    """A ``torch.save`` file, read as accelerate reads it (tensors and numbers only)."""
    from accelerate.utils import load
    return load(path, map_location="cpu")


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``path`` cannot be loaded, in a few words (torch's own messages run to several
    lines, and one of them advises loading the file with every safety off)."""
    import pickle
    if isinstance(err, pickle.UnpicklingError):
        return "holds objects other than tensors and numbers (changed since it was written?)"
    return "truncated or damaged"


def check_rng_states(folder: Path, world_size: int) -> list[dict]:
    """Every rank's RNG state, loaded and checked before anything is restored: accelerate
    would go on without one it cannot load, and the resumed run would then draw other batches
    and noise than the run it continues."""
    import random

    import numpy as np
    import torch

    states = []
    for rank in range(world_size):
        path = folder / RNG_FILE.format(rank=rank)
        if not path.is_file():
            raise CheckpointError(f"{folder}: no RNG state of rank {rank} ({path.name}), so the "
                                  f"run cannot continue as it would have; {AFRESH}")
        try:
            saved = _load_pickle(path)
            missing = [k for k in RNG_KEYS if k not in saved]
            if missing:
                raise CheckpointError(f"{path}: no {missing[0]} in the RNG state; {AFRESH}")
            random.Random().setstate(saved["random_state"])
            np.random.RandomState().set_state(saved["numpy_random_seed"])
            if not isinstance(saved["torch_manual_seed"], torch.ByteTensor):
                raise TypeError("torch_manual_seed is not a byte tensor")
        except CheckpointError:
            raise
        except Exception as err:  # any reason the state cannot be restored
            reason = _unreadable(path, err) if not isinstance(err, (TypeError, ValueError,
                                                                    KeyError)) \
                else "not an RNG state this engine writes"
            raise CheckpointError(f"{path}: the RNG state cannot be loaded: {reason}; "
                                  f"{AFRESH}") from None
        states.append(saved)
    return states


def _culprit(folder: Path, err: Exception) -> str:
    """The one-line reason ``accelerator.load_state`` failed: the first file that does not
    load on its own, else the error itself, cut short."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".bin", ".pkl", ".pt", ".safetensors"):
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open
                with safe_open(str(path), framework="pt") as weights:
                    for key in weights.keys():
                        weights.get_slice(key)
            else:
                _load_pickle(path)
        except Exception as file_err:  # the first file that does not load
            return f"{path}: {_unreadable(path, file_err)}; {AFRESH}"
    first = (str(err).splitlines() or [type(err).__name__])[0]
    first = first if len(first) <= 100 else first[:97] + "..."
    return f"{folder}: the checkpoint does not fit this run ({first}); {AFRESH}"


def load_latest(accelerator: Accelerator, root: Path, check=None) -> dict | None:
    """Restore model, optimizer, RNG and trainer state from the latest checkpoint, if any.

    Files are verified against the checksums written with them before anything is
    deserialised, so only bytes this engine wrote are ever loaded; each rank's RNG state is
    checked first (:func:`check_rng_states`) and a file that does not load is refused in one
    line, never resumed without.
    """
    import torch

    folder = find_latest(root)
    if folder is None:
        return None
    state = verify(folder)
    if check is not None:
        check(state, folder)  # e.g. refuse a checkpoint of a run with other settings
    rng = check_rng_states(folder, accelerator.num_processes)[accelerator.process_index]
    try:
        accelerator.load_state(str(folder))
    except CheckpointError:
        raise
    except Exception as err:  # torch's and safetensors' errors: many lines, or one of 400
        raise CheckpointError(_culprit(folder, err)) from None
    if not torch.equal(torch.get_rng_state(), rng["torch_manual_seed"]):
        raise CheckpointError(f"{folder}: the RNG state was not restored; {AFRESH}")
    logger.info("resumed from %s (epoch %d, step %d)", folder, state["epoch"], state["step"])
    return own_rank(state, accelerator.process_index)


def own_rank(state: dict, rank: int) -> dict:
    """The trainer state as rank ``rank`` saved it (older checkpoints kept rank 0's only)."""
    return {**state, **{k: state[k][rank] for k in PER_RANK if isinstance(state.get(k), list)}}
