"""Decode-once image cache: every preprocessed image in one memory-mapped array.

The original decoded a full-size DICOM (and re-read the split CSV) for every sample of every
epoch. Here each image is decoded and preprocessed once (:func:`build_image_cache`) into
``images.npy`` — uint16 holding ``round(x * 65535)``, exact to 1/131070 and half the size of
float32 — beside ``index.json``, which records the row order (dicom ids), the resolution, the
preprocessing mode (``forgetmi`` or ``release``, see :mod:`forgetmi.data.images`) and a
fingerprint of the source files and that mode, so a cache built for other data or settings is
never used silently (:meth:`ImageCache.open` with ``expect``; :func:`cache_is_current`).

The cache is built in a temporary folder beside its target and renamed into place at the end,
so an interrupted build leaves either no cache or the previous one, never a partial one. A lock
file beside the target serialises builders of one folder (e.g. Slurm array tasks sharing a
cache): the one that waited reuses what the first built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from forgetmi.data.formats import resolve_image_path
from forgetmi.data.images import check_mode, load_image
from forgetmi.errors import CacheError, DataError
from forgetmi.utils.atomic import atomic_path, build_lock, remove_stale_temporaries, stamp

logger = logging.getLogger("forgetmi.data.cache")

FORMAT_VERSION = 1
ARRAY_FILE = "images.npy"
INDEX_FILE = "index.json"
STORE_DTYPE = "uint16"
STORE_SCALE = 65535  # stored value = round(pixel * STORE_SCALE)
EXPECT_KEYS = ("image_size", "crop_size", "fingerprint", "dicom_ids", "preprocessing")


# --------------------------------------------------------------------------------- source identity

def _image_paths(table: pd.DataFrame, img_dir: str | os.PathLike, ext: str) -> list[Path]:
    missing = [c for c in ("subject_id", "study_id", "dicom_id") if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {', '.join(missing)}")
    return [resolve_image_path(img_dir, subject, study, dicom, ext)
            for subject, study, dicom in zip(table["subject_id"], table["study_id"],
                                             table["dicom_id"])]


def _fingerprint(dicom_ids: Sequence[str], paths: Sequence[Path], img_dir: Path,
                 preprocessing: str = "forgetmi") -> str:
    """Hash of the preprocessing mode and the sorted dicom ids with each file's relative path,
    size and mtime.

    Order-independent (the row order is checked separately through ``dicom_ids``); a missing
    file hashes as such, so the fingerprint of incomplete data never matches a built cache. The
    mode is hashed too: the same files preprocessed two ways are two different caches.
    """
    entries = []
    for dicom_id, path in zip(dicom_ids, paths):
        try:
            stat = path.stat()
            state = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            state = "missing"
        try:
            rel = path.relative_to(img_dir).as_posix()
        except ValueError:
            rel = path.as_posix()
        entries.append(f"{dicom_id}\t{rel}\t{state}")
    digest = hashlib.sha256(f"preprocessing\t{check_mode(preprocessing)}\n".encode("utf-8"))
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8") + b"\n")
    return digest.hexdigest()


def expected_meta(table: pd.DataFrame, img_dir: str | os.PathLike, image_size: int,
                  crop_size: int | None = None, ext: str = "auto",
                  preprocessing: str = "forgetmi") -> dict:
    """What a cache for this table and these settings must record (``ImageCache.open(expect=)``)."""
    img_dir = Path(img_dir)
    dicom_ids = [str(d) for d in table["dicom_id"]]
    return {
        "image_size": int(image_size),
        "crop_size": int(image_size if crop_size is None else crop_size),
        "fingerprint": _fingerprint(dicom_ids, _image_paths(table, img_dir, ext), img_dir,
                                    preprocessing),
        "dicom_ids": dicom_ids,
        "preprocessing": preprocessing,
    }


def cache_is_current(cache_dir: str | os.PathLike, table: pd.DataFrame,
                     img_dir: str | os.PathLike, image_size: int, crop_size: int | None = None,
                     ext: str = "auto", preprocessing: str = "forgetmi") -> bool:
    """True when ``cache_dir`` holds a complete cache for exactly this table, files and settings."""
    try:
        ImageCache.open(cache_dir, expect=expected_meta(table, img_dir, image_size, crop_size, ext,
                                                        preprocessing))
    except CacheError as err:
        logger.debug("image cache %s is not current: %s", cache_dir, err)
        return False
    return True


# ------------------------------------------------------------------------------------------ reading

class ImageCache:
    """Read access to a built cache. Cheap to pickle: each process maps the array on first use."""

    def __init__(self, cache_dir: str | os.PathLike, index: dict):
        self.cache_dir = Path(cache_dir)
        self.dicom_ids: list[str] = list(index["dicom_ids"])
        self.image_size: int = int(index["image_size"])
        self.crop_size: int = int(index["crop_size"])
        self.fingerprint: str = index["fingerprint"]
        # Caches written before the mode was recorded were all built the forgetmi way.
        self.preprocessing: str = index.get("preprocessing", "forgetmi")
        self._positions = {dicom_id: i for i, dicom_id in enumerate(self.dicom_ids)}
        self.purged = frozenset(int(i) for i in index.get("purged", []))  # forgotten patients
        self.purged_lists: list[str] = list(index.get("purged_lists", []))  # who they are
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expect: dict | None = None) -> "ImageCache":
        """Open and validate a cache; ``expect`` (see :func:`expected_meta`) must match it.

        Raises :class:`CacheError` saying what is wrong: missing or incomplete, another format
        version, or built for other data (ids, files) or another resolution.
        """
        cache_dir = Path(cache_dir)
        index_path, array_path = cache_dir / INDEX_FILE, cache_dir / ARRAY_FILE
        if not index_path.is_file() or not array_path.is_file():
            raise CacheError(f"no complete image cache at {cache_dir} "
                             f"({INDEX_FILE} and {ARRAY_FILE} expected)")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            fields = [index[k] for k in ("format_version", "dicom_ids", "image_size", "crop_size",
                                         "fingerprint", "dtype", "scale")]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CacheError(f"unreadable image cache index {index_path} ({err!r}); rebuild it") from None
        version = fields[0]
        if version != FORMAT_VERSION:
            raise CacheError(f"image cache at {cache_dir} has format version {version}, this "
                             f"package reads version {FORMAT_VERSION}; rebuild it")
        if index["dtype"] != STORE_DTYPE or index["scale"] != STORE_SCALE:
            raise CacheError(f"image cache at {cache_dir} stores {index['dtype']}/{index['scale']}, "
                             f"expected {STORE_DTYPE}/{STORE_SCALE}; rebuild it")
        cache = cls(cache_dir, index)
        shape = (len(cache.dicom_ids), cache.image_size, cache.image_size)
        try:
            array = np.load(array_path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise CacheError(f"unreadable image array {array_path} ({err}); rebuild the cache") from None
        if array.shape != shape or array.dtype != np.dtype(STORE_DTYPE):
            raise CacheError(f"image array {array_path} is {array.dtype} {array.shape}, index says "
                             f"{STORE_DTYPE} {shape}; the cache is incomplete, rebuild it")
        if expect is not None:
            problems = cache._differences(expect)
            if problems:
                raise CacheError(f"image cache at {cache_dir} does not match: {'; '.join(problems)}")
        cache._array, cache._pid = array, os.getpid()
        return cache

    def _differences(self, expect: dict) -> list[str]:
        unknown = set(expect) - set(EXPECT_KEYS)
        if unknown:
            raise ValueError(f"unknown expect key(s) {sorted(unknown)}; known: {EXPECT_KEYS}")
        problems = []
        if expect.get("preprocessing") not in (None, self.preprocessing):
            problems.append(f"built with {self.preprocessing} preprocessing, wanted "
                            f"{expect['preprocessing']}")
        for key in ("image_size", "crop_size"):
            if key in expect and expect[key] is not None and int(expect[key]) != getattr(self, key):
                problems.append(f"built at {key}={getattr(self, key)}, wanted {int(expect[key])} "
                                "(another resolution)")
        if "dicom_ids" in expect:
            wanted = [str(d) for d in expect["dicom_ids"]]
            if wanted != self.dicom_ids:
                if sorted(wanted) == sorted(self.dicom_ids):
                    problems.append("same images in another row order (built for another table)")
                else:
                    diff = len(set(wanted).symmetric_difference(self.dicom_ids))
                    problems.append(f"built for other data: {len(self.dicom_ids)} images cached, "
                                    f"{len(wanted)} wanted, {diff} id(s) differ")
        if "fingerprint" in expect and expect["fingerprint"] != self.fingerprint:
            problems.append("source images changed since the build (file sizes, times or "
                            "locations differ, or files are missing)")
        return problems

    @property
    def array(self) -> np.ndarray:
        """The uint16 store, mapped read-only; remapped after a fork or unpickling."""
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.cache_dir / ARRAY_FILE, mmap_mode="r")
            self._pid = os.getpid()
        return self._array

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, None  # never pickle the mapping itself
        return state

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def __repr__(self) -> str:
        return (f"ImageCache({str(self.cache_dir)!r}, n={len(self)}, "
                f"image_size={self.image_size}, crop_size={self.crop_size}, "
                f"preprocessing={self.preprocessing!r})")

    def index_of(self, dicom_id: str) -> int:
        """Row of ``dicom_id`` in the cache."""
        try:
            return self._positions[str(dicom_id)]
        except KeyError:
            raise CacheError(f"image cache at {self.cache_dir} has no entry for a requested "
                             "dicom_id (built for other data?)") from None

    def _check(self, indices) -> None:
        if self.purged and not self.purged.isdisjoint(indices):
            raise CacheError(f"image cache at {self.cache_dir}: a requested image belongs to a "
                             "forgotten patient and was purged; leave its patient out")

    def get(self, i: int) -> np.ndarray:
        """Image ``i`` as float32 (image_size, image_size) in [0, 1]."""
        self._check((i,))
        image = self.array[i].astype(np.float32)
        image /= np.float32(STORE_SCALE)
        return image

    def get_raw(self, i: int) -> np.ndarray:
        """Image ``i`` as stored: uint16, ``get(i) == get_raw(i) / STORE_SCALE``.

        Half the bytes of :meth:`get`; a loader can ship these and scale on the accelerator.
        """
        self._check((i,))
        return np.array(self.array[i])

    def get_many(self, indices: Iterable[int], out: np.ndarray | None = None) -> np.ndarray:
        """Images at ``indices`` as float32 (n, image_size, image_size); fills ``out`` if given."""
        return self._read_many(indices, out, np.float32)

    def get_many_raw(self, indices: Iterable[int], out: np.ndarray | None = None) -> np.ndarray:
        """Images at ``indices`` as stored, uint16 (n, image_size, image_size); ``/ STORE_SCALE``
        gives :meth:`get_many`'s values. Fills ``out`` if given."""
        return self._read_many(indices, out, np.uint16)

    def _read_many(self, indices: Iterable[int], out: np.ndarray | None, dtype) -> np.ndarray:
        indices = list(indices)
        self._check(indices)
        shape = (len(indices), self.image_size, self.image_size)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype:
            raise ValueError(f"out must be {np.dtype(dtype)} {shape}, got {out.dtype} {out.shape}")
        array = self.array
        # Image by image: fancy indexing the memmap would first copy every row as uint16.
        for j, i in enumerate(indices):
            if dtype is np.uint16:
                out[j] = array[i]
            else:
                to_unit(array[i], out[j])
        return out


def to_unit(stored: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:] = stored / STORE_SCALE`` (float32 division: 65535 maps to exactly 1.0)."""
    np.copyto(out, stored, casting="safe")
    out /= np.float32(STORE_SCALE)
    return out


# ----------------------------------------------------------------------------------------- building

def _quantise(image: np.ndarray) -> np.ndarray:
    return np.rint(image * np.float32(STORE_SCALE)).astype(np.uint16)


def _fill_rows(array_path: str, jobs: list[tuple[int, str]], image_size: int,
               crop_size: int, preprocessing: str = "forgetmi"
               ) -> tuple[int, tuple[int, str] | None]:
    """Decode ``jobs`` (row, path) into the memmap. Returns (rows done, first failure or None).

    Failures are returned, not raised, so the parent can report the split line with the file.
    """
    array = np.load(array_path, mmap_mode="r+")
    done = 0
    try:
        for row, path in jobs:
            try:
                array[row] = _quantise(load_image(path, image_size, crop_size, preprocessing))
            except DataError as err:
                return done, (row, err.reason)
            done += 1
    finally:
        array.flush()
        del array
    return done, None


def _source_lines(table: pd.DataFrame) -> list[int]:
    """File line of each row in the CSV the table came from.

    Tables read by ``formats.read_split`` carry a 0-based row index, and partitions keep the
    split's index, so ``index + 2`` (header on line 1) is the line even for a subset.
    """
    if pd.api.types.is_integer_dtype(table.index.dtype):
        return [int(i) + 2 for i in table.index]
    return list(range(2, len(table) + 2))


def _raise_decode_failure(failure: tuple[int, str], paths: Sequence[Path], lines: Sequence[int],
                          source: Path | None) -> None:
    row, reason = failure
    where = (f" (image of line {lines[row]} of {source})" if source is not None
             else f" (table row {row})")
    raise DataError(reason + where, paths[row])


def _check_files(paths: Sequence[Path], lines: Sequence[int], source: Path | None) -> None:
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if not missing:
        return
    first = missing[0]
    count = f"; {len(missing)} of {len(paths)} images are missing" if len(missing) > 1 else ""
    if source is not None:
        raise DataError(f"image file not found: {paths[first]}{count}", source, lines[first],
                        "dicom_id")
    raise DataError(f"image file not found for table row {first}{count}", paths[first])


def build_image_cache(table: pd.DataFrame, img_dir: str | os.PathLike,
                      cache_dir: str | os.PathLike, image_size: int, crop_size: int | None = None,
                      ext: str = "auto", workers: int = 1,
                      source: str | os.PathLike | None = None,
                      preprocessing: str = "forgetmi") -> ImageCache:
    """Decode and preprocess every row's image once into ``cache_dir``; return the opened cache.

    ``table`` is a split or forget table (``subject_id, study_id, dicom_id``); the cache rows
    follow its order. ``source`` is the CSV the table was read from, used in error messages
    (a row's line there is its index + 2: the split as read, or a partition that kept the
    split's index). A missing or unreadable image stops the build
    with a :class:`DataError`; nothing is skipped. ``workers > 1`` decodes in that many
    processes, each writing its rows into the shared memory-mapped array. ``preprocessing`` is
    the mode of :func:`~forgetmi.data.images.load_image` (forgetmi | release).
    """
    img_dir = Path(img_dir)
    cache_dir = Path(cache_dir)
    source = None if source is None else Path(source)
    crop_size = int(image_size if crop_size is None else crop_size)
    image_size = int(image_size)
    if not 1 <= image_size <= crop_size:
        raise ValueError(f"need 1 <= image_size <= crop_size, got {image_size} and {crop_size}")
    if len(table) == 0:
        raise DataError("the table has no rows; nothing to cache", source)
    dicom_ids = [str(d) for d in table["dicom_id"]]
    lines = _source_lines(table)
    duplicated = pd.Series(dicom_ids).duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        raise DataError("duplicate dicom_id; each image must appear once", source,
                        lines[row] if source is not None else None, "dicom_id")
    paths = _image_paths(table, img_dir, ext)
    _check_files(paths, lines, source)
    fingerprint = _fingerprint(dicom_ids, paths, img_dir, preprocessing)
    before = stamp(cache_dir / INDEX_FILE)
    with build_lock(cache_dir):
        if stamp(cache_dir / INDEX_FILE) != before:
            # Another process finished a build while this one waited for the lock: use it if
            # it is the same cache. (A cache that was there before is rebuilt: the caller asked.)
            try:
                return ImageCache.open(cache_dir, expect={
                    "image_size": image_size, "crop_size": crop_size,
                    "fingerprint": fingerprint, "dicom_ids": dicom_ids,
                    "preprocessing": preprocessing})
            except CacheError:
                pass
        remove_stale_temporaries(cache_dir)
        _build(paths, dicom_ids, lines, fingerprint, cache_dir, image_size, crop_size, ext,
               workers, source, preprocessing)
    return ImageCache.open(cache_dir)


def _build(paths: Sequence[Path], dicom_ids: list[str], lines: Sequence[int], fingerprint: str,
           cache_dir: Path, image_size: int, crop_size: int, ext: str, workers: int,
           source: Path | None, preprocessing: str = "forgetmi") -> None:
    n = len(paths)
    logger.info("building image cache: %d images at %d px (crop %d, %s preprocessing) with %d "
                "worker(s) -> %s", n, image_size, crop_size, preprocessing, workers, cache_dir)
    # The cache folder is the package's own (a name it chose), rebuilt on purpose.
    with atomic_path(cache_dir, folder=True, replace=True) as tmp:
        tmp.mkdir()
        array_path = tmp / ARRAY_FILE
        np.lib.format.open_memmap(array_path, mode="w+", dtype=STORE_DTYPE,
                                  shape=(n, image_size, image_size)).flush()
        jobs = [(i, str(p)) for i, p in enumerate(paths)]
        with tqdm(total=n, desc="image cache", unit="img", disable=None) as bar:
            if workers <= 1:
                for start in range(0, n, 8):
                    done, failure = _fill_rows(str(array_path), jobs[start:start + 8],
                                               image_size, crop_size, preprocessing)
                    bar.update(done)
                    if failure:
                        _raise_decode_failure(failure, paths, lines, source)
            else:
                _fill_parallel(str(array_path), jobs, image_size, crop_size, workers, bar,
                               paths, lines, source, preprocessing)
        index = {
            "format_version": FORMAT_VERSION,
            "dicom_ids": dicom_ids,
            "image_size": image_size,
            "crop_size": crop_size,
            "dtype": STORE_DTYPE,
            "scale": STORE_SCALE,
            "fingerprint": fingerprint,
            "preprocessing": preprocessing,
            "ext": ext,
        }
        with open(tmp / INDEX_FILE, "w", encoding="utf-8") as fh:
            json.dump(index, fh)
            fh.flush()
            os.fsync(fh.fileno())


def _fill_parallel(array_path: str, jobs: list[tuple[int, str]], image_size: int, crop_size: int,
                   workers: int, bar: tqdm, paths: Sequence[Path], lines: Sequence[int],
                   source: Path | None, preprocessing: str = "forgetmi") -> None:
    # Small chunks keep the bar moving and the load balanced; several per worker.
    chunk = max(1, min(16, len(jobs) // (workers * 4)))
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    # spawn: workers start clean, without the parent's threads (torch/OpenMP) or open files.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
        pending = {pool.submit(_fill_rows, array_path, part, image_size, crop_size, preprocessing)
                   for part in chunks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done, failure = future.result()
                    bar.update(done)
                    if failure:
                        _raise_decode_failure(failure, paths, lines, source)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
