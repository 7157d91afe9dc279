"""Batches straight from the caches, into reused image buffers, prefetched by a thread.

A default DataLoader builds every batch by stacking per-sample arrays into a freshly allocated
tensor; at 2048² that is 256 MiB a batch, and the page faults of that allocation cost more than
reading the cache itself. :class:`BatchReader` instead reads each batch's images with one
``get_many`` into one of a few preallocated buffers (pinned when batches go to a GPU), and
fills the next batch on a background thread while the current one is used (numpy releases the
GIL while it converts). Images travel as the cache stores them, uint16, and become float32 in
[0, 1] on the device (:func:`to_device`): half the bytes to copy, and on a GPU the conversion
is free. A noisy copy's image noise is drawn there too, after the conversion (the batch carries
the per-sample seeds as ``image_noise``): on one CPU thread it cost more than reading the batch.
Token padding is cut here, before the copy, to the batch's bucketed length (:func:`trim_padding`
with the dataset's ``length_bucket``). The price: a batch's ``image`` tensor is overwritten
``buffers - 1`` batches later, so a consumer that keeps batches must copy them. The training
engine uses each batch once, then draws the next.
"""

from __future__ import annotations

import queue
import threading
from functools import partial
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from forgetmi.data.cache import STORE_SCALE, to_unit
from forgetmi.data.dataset import EdemaDataset, trim_padding
from forgetmi.data.noise import add_image_noise
from forgetmi.data.text import padded_length

_DONE = object()


class BatchReader:
    """Iterate the batches ``batches`` (lists of dataset positions) of an :class:`EdemaDataset`."""

    def __init__(self, dataset: EdemaDataset, batches: Sequence[Sequence[int]], buffers: int = 3,
                 prefetch: bool = True, pin_memory: bool = False):
        if buffers < 2:
            raise ValueError("BatchReader needs at least 2 buffers")
        self.dataset = dataset
        self.batches = [list(b) for b in batches]
        self.prefetch = prefetch
        size = dataset.image_cache.image_size
        largest = max((len(b) for b in self.batches), default=0)
        self._buffers = [torch.empty((largest, 1, size, size), dtype=torch.uint16,
                                     pin_memory=pin_memory and torch.cuda.is_available())
                         for _ in range(buffers if largest else 0)]

    def __len__(self) -> int:
        return len(self.batches)

    def read(self, positions: Sequence[int], buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch; its images land in ``buffer``."""
        ds = self.dataset
        idx = np.asarray(positions, dtype=np.int64)
        images = buffer[: len(idx)]
        ds.image_cache.get_many_raw(ds.image_rows[idx], out=images.numpy()[:, 0])
        if ds.noisy_ids is not None:
            ids, mask = ds.noisy_ids[idx], ds.noisy_mask[idx]
        else:
            ids, mask = ds.token_cache.rows(ds.token_rows[idx], ds.length_bucket)
        # trim_padding's cut, made before the copy to the device
        length = padded_length(int(mask.sum(axis=1).max()), ds.length_bucket, mask.shape[1])
        batch = {
            "image": images,
            "input_ids": torch.from_numpy(np.ascontiguousarray(ids[:, :length], dtype=np.int64)),
            "attention_mask": torch.from_numpy(np.ascontiguousarray(mask[:, :length],
                                                                    dtype=np.int64)),
            "label": torch.from_numpy(ds.labels[idx].copy()),
            "index": torch.from_numpy(ds.positions[idx].copy()),
            "subject_id": torch.from_numpy(ds.subject_ids[idx].copy()),
            "study_id": torch.from_numpy(ds.study_ids[idx].copy()),
        }
        noise = ds.perturb.image_noise([ds.dicom_ids[i] for i in idx]) if ds.perturb else None
        if noise is not None:
            batch["image_noise"] = noise
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if not self.prefetch:
            for k, positions in enumerate(self.batches):
                yield self.read(positions, self._buffers[k % len(self._buffers)])
            return
        # The queue holds at most buffers-2 finished batches: with the one the consumer holds
        # and the one being filled, no buffer is overwritten while still in use.
        ready: queue.Queue = queue.Queue(maxsize=max(1, len(self._buffers) - 2))
        stop = threading.Event()

        def produce():
            try:
                for k, positions in enumerate(self.batches):
                    if stop.is_set():
                        return
                    ready.put(self.read(positions, self._buffers[k % len(self._buffers)]))
                ready.put(_DONE)
            except BaseException as err:  # handed to the consumer, raised there
                ready.put(err)

        worker = threading.Thread(target=produce, name="forgetmi-batches", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    pass
                worker.join(timeout=0.05)


def to_device(batch: dict, device) -> dict:
    """Move a batch to ``device``: uint16 images scaled to float32 [0, 1], then the batch's
    ``image_noise`` (a noisy copy's) drawn and added there; the entry itself is dropped."""
    out = {}
    noise = batch.get("image_noise")
    for key, value in batch.items():
        if key == "image_noise":
            continue
        if not torch.is_tensor(value):
            out[key] = value
            continue
        if key == "image" and value.dtype == torch.uint16:
            value = _unit_images(value, torch.device(device))
        else:
            value = value.to(device, non_blocking=True)
        out[key] = value
    if noise is not None:
        add_image_noise(out["image"], noise)
    return out


def _unit_images(stored: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint16 cache values as float32 in [0, 1] on ``device``."""
    if device.type == "cpu":
        # numpy converts uint16 several times faster than torch's CPU kernel; same values.
        out = np.empty(tuple(stored.shape), dtype=np.float32)
        return torch.from_numpy(to_unit(stored.numpy(), out))
    return stored.to(device, non_blocking=True).to(torch.float32).div_(STORE_SCALE)


def _collate_trimmed(items: list, bucket: int = 1) -> dict:
    return trim_padding(default_collate(items), bucket)


def batch_loader(dataset: Dataset, batches: list[list[int]], num_workers: int = 0, seed: int = 0):
    """Batches of ``dataset`` in the given order, token padding trimmed to the dataset's
    ``length_bucket``: straight from the caches for an :class:`EdemaDataset` (reused buffers,
    thread prefetch), a DataLoader otherwise."""
    if isinstance(dataset, EdemaDataset):
        return BatchReader(dataset, batches, pin_memory=torch.cuda.is_available())
    # An own generator: creating a loader must not draw from the global RNG, or a resumed
    # run's dropout masks would drift from an uninterrupted run's.
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(),
                      collate_fn=partial(_collate_trimmed,
                                         bucket=getattr(dataset, "length_bucket", 1)),
                      generator=torch.Generator().manual_seed(seed))
