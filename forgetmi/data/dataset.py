"""The image-report dataset every training, unlearning and evaluation loop reads, and its loader.

Items come from the two decode-once caches (images, tokens). With a :class:`Perturber` the
dataset is the *noisy* copy of its partition: each image gets seeded Gaussian noise when it is
read (by :func:`forgetmi.data.batches.to_device` on the batch's device when read in batches), and
each report is perturbed and re-tokenised once, at construction, so every epoch sees the same
noisy set at no extra cost.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from forgetmi.data.noise import Perturber
from forgetmi.data.text import TokenCache, padded_length, tokenize_texts
from forgetmi.errors import CacheError, DataError

logger = logging.getLogger("forgetmi.data.dataset")


def _report_texts(reports: pd.DataFrame | Mapping[int, str]) -> dict[int, str]:
    if isinstance(reports, pd.DataFrame):
        return dict(zip(reports["study_id"].astype("int64").tolist(), reports["text"].tolist()))
    return {int(k): str(v) for k, v in reports.items()}


class EdemaDataset(Dataset):
    """Rows of one partition as dicts of tensors.

    ``table``: partition rows (subject_id, study_id, dicom_id, severity), indexed by their row
    position in the split. ``image_cache`` / ``token_cache``: the built caches. ``perturb``: make
    this the noisy copy (needs ``reports``, the report texts by study id, when it perturbs text).
    ``length_bucket``: batches of this dataset cut their token padding to the longest report
    rounded up to a multiple of it (see :func:`trim_padding`; ``data.length_bucket``).

    Item: image float32 (1, H, W), input_ids int64 (L), attention_mask int64 (L), label int64,
    index int64 (split row position), subject_id int64, study_id int64.
    """

    def __init__(self, table: pd.DataFrame, image_cache, token_cache: TokenCache,
                 perturb: Perturber | None = None,
                 reports: pd.DataFrame | Mapping[int, str] | None = None, tokenizer=None,
                 length_bucket: int = 1):
        if not pd.api.types.is_integer_dtype(table.index):
            raise ValueError("the table's index must be the split row position (integers); "
                             "pass a partition of the split without resetting its index")
        self.image_cache = image_cache
        self.token_cache = token_cache
        self.perturb = perturb
        self.length_bucket = int(length_bucket)
        self.dicom_ids: list[str] = table["dicom_id"].astype(str).tolist()
        self.positions = table.index.to_numpy(dtype=np.int64)
        self.subject_ids = table["subject_id"].to_numpy(dtype=np.int64)
        self.study_ids = table["study_id"].to_numpy(dtype=np.int64)
        self.labels = table["severity"].to_numpy(dtype=np.int64)
        try:
            self.image_rows = np.array([image_cache.index_of(d) for d in self.dicom_ids],
                                       dtype=np.int64)
        except (KeyError, CacheError):
            raise CacheError("an image of this partition is not in the image cache; "
                             "rebuild it for this split") from None
        self.token_rows = np.array([token_cache.index_of(s) for s in self.study_ids],
                                   dtype=np.int64)
        self.noisy_ids: np.ndarray | None = None
        self.noisy_mask: np.ndarray | None = None
        if perturb is not None and perturb.config.use_text:
            self._tokenize_noisy_texts(perturb, reports, tokenizer)

    def _tokenize_noisy_texts(self, perturb: Perturber, reports, tokenizer) -> None:
        if reports is None:
            raise ValueError("text perturbation needs the report texts (reports=...)")
        texts_by_study = _report_texts(reports)
        noisy, modes = [], {"word": 0, "char": 0}
        for i, (dicom_id, study_id) in enumerate(zip(self.dicom_ids, self.study_ids)):
            text = texts_by_study.get(int(study_id))
            if text is None:
                raise DataError("study has no report in the reports given",
                                row=int(self.positions[i]) + 2, field="study_id")
            # Keyed by image, as the image noise: two images of one study get different noise.
            noisy_text, mode = perturb.text_with_mode(text, dicom_id)
            noisy.append(noisy_text)
            modes[mode] += 1
        tokenizer = tokenizer if tokenizer is not None else self.token_cache.tokenizer()
        self.noisy_ids, self.noisy_mask = tokenize_texts(tokenizer, noisy,
                                                         self.token_cache.max_length)
        logger.info("noisy texts: %d (word-level %d, char-level %d)",
                    len(noisy), modes["word"], modes["char"])

    def __len__(self) -> int:
        return len(self.dicom_ids)

    def token_lengths(self) -> np.ndarray:
        """Real tokens of each item's report (the noisy copy's where it has one)."""
        if self.noisy_mask is not None:
            return self.noisy_mask.sum(axis=1)
        return self.token_cache.lengths()[self.token_rows]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.image_cache.get(int(self.image_rows[i]))
        if self.perturb is not None and self.perturb.config.use_image:
            image = self.perturb.image(image, self.dicom_ids[i])
        else:
            image = np.array(image, dtype=np.float32)  # a writable copy, never the memmap
        if self.noisy_ids is not None:
            input_ids, attention_mask = self.noisy_ids[i], self.noisy_mask[i]
        else:
            input_ids, attention_mask = self.token_cache.row(int(self.token_rows[i]))
        return {
            "image": torch.from_numpy(image).unsqueeze(0),
            "input_ids": torch.as_tensor(input_ids, dtype=torch.int64),
            "attention_mask": torch.as_tensor(attention_mask, dtype=torch.int64),
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(self.positions[i], dtype=torch.int64),
            "subject_id": torch.tensor(self.subject_ids[i], dtype=torch.int64),
            "study_id": torch.tensor(self.study_ids[i], dtype=torch.int64),
        }


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                 num_workers: int = 0, drop_last: bool = False, pin_memory: bool = False,
                 persistent_workers: bool | None = None) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``.

    The n-th epoch's order is the same in every run with the same seed, whatever
    ``num_workers`` or ``persistent_workers``: the shuffling sampler owns its generator, because
    the loader also draws worker seeds from its own generator (once per epoch, or once in all
    with persistent workers), which would otherwise shift the order.
    """
    sampler_generator = torch.Generator()
    sampler_generator.manual_seed(int(seed))
    sampler = (RandomSampler(dataset, generator=sampler_generator) if shuffle
               else SequentialSampler(dataset))
    worker_generator = torch.Generator()
    worker_generator.manual_seed(int(seed) + 1)
    if persistent_workers is None:
        persistent_workers = num_workers > 0  # workers keep their reopened memmaps across epochs
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=worker_generator,
                      num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                      persistent_workers=persistent_workers and num_workers > 0)


def trim_padding(batch: dict, bucket: int = 1) -> dict:
    """Cut ``input_ids``/``attention_mask`` to the longest report in the batch, rounded up to a
    multiple of ``bucket`` and capped at their width (``max_length``).

    Reports average far fewer tokens than ``max_length``; attention over the padding is masked
    anyway, so this changes no result and saves most of the text encoder's work. Rounding up
    leaves a run a handful of sequence lengths instead of one per step: fp16/bf16 attention
    kernels are built and tuned per shape.
    """
    mask = batch.get("attention_mask")
    if mask is None or mask.ndim != 2:
        return batch
    length = padded_length(int(mask.sum(dim=1).max()), bucket, mask.shape[1])
    if length >= mask.shape[1]:
        return batch
    out = dict(batch)
    out["attention_mask"] = mask[:, :length]
    out["input_ids"] = batch["input_ids"][:, :length]
    return out
