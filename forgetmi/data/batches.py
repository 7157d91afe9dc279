"""Batches straight from the caches, into reused image buffers, prefetched by a thread.

A default DataLoader builds every batch by stacking per-sample arrays into a freshly allocated
tensor; at 2048² that is 256 MiB a batch, and the page faults of that allocation cost more than
reading the cache itself. :class:`BatchReader` instead reads each batch's images with one
``get_many`` into one of a few preallocated buffers (pinned when batches go to a GPU), and
fills the next batch on a background thread while the current one is used (numpy releases the
GIL while it converts). Clean images travel as the cache stores them, uint16, and become
float32 in [0, 1] on the device (:func:`to_device`): half the bytes to copy, and on a GPU the
conversion is free. The price: a batch's ``image`` tensor is overwritten ``buffers - 1``
batches later, so a consumer that keeps batches must copy them. The training engine uses each
batch once, then draws the next.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from forgetmi.data.cache import STORE_SCALE
from forgetmi.data.dataset import EdemaDataset, trim_padding

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
        # Noise is added in [0, 1] floats; clean images stay in the cache's uint16.
        self.raw = dataset.perturb is None or not dataset.perturb.config.use_image
        dtype = torch.uint16 if self.raw else torch.float32
        self._buffers = [torch.empty((largest, 1, size, size), dtype=dtype,
                                     pin_memory=pin_memory and torch.cuda.is_available())
                         for _ in range(buffers if largest else 0)]

    def __len__(self) -> int:
        return len(self.batches)

    def read(self, positions: Sequence[int], buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch; its images land in ``buffer``."""
        ds = self.dataset
        idx = np.asarray(positions, dtype=np.int64)
        images = buffer[: len(idx)]
        plane = images.numpy()[:, 0]
        if self.raw:
            ds.image_cache.get_many_raw(ds.image_rows[idx], out=plane)
        else:
            ds.image_cache.get_many(ds.image_rows[idx], out=plane)
            for j, i in enumerate(idx):
                plane[j] = ds.perturb.image(plane[j], ds.dicom_ids[i])
        if ds.noisy_ids is not None:
            longest = max(1, int(ds.noisy_mask[idx].sum(axis=1).max()))
            input_ids = torch.from_numpy(np.ascontiguousarray(ds.noisy_ids[idx, :longest]))
            mask = torch.from_numpy(np.ascontiguousarray(ds.noisy_mask[idx, :longest]))
        else:
            ids, m = ds.token_cache.rows(ds.token_rows[idx])
            input_ids, mask = torch.from_numpy(ids), torch.from_numpy(m)
        return {
            "image": images,
            "input_ids": input_ids.to(torch.int64),
            "attention_mask": mask.to(torch.int64),
            "label": torch.from_numpy(ds.labels[idx].copy()),
            "index": torch.from_numpy(ds.positions[idx].copy()),
            "subject_id": torch.from_numpy(ds.subject_ids[idx].copy()),
            "study_id": torch.from_numpy(ds.study_ids[idx].copy()),
        }

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
    """Move a batch to ``device``: padding trimmed, uint16 images scaled to float32 [0, 1]."""
    out = {}
    for key, value in trim_padding(batch).items():
        if not torch.is_tensor(value):
            out[key] = value
            continue
        value = value.to(device, non_blocking=True)
        if key == "image" and value.dtype == torch.uint16:
            value = value.to(torch.float32).div_(STORE_SCALE)
        out[key] = value
    return out


def batch_loader(dataset: Dataset, batches: list[list[int]], num_workers: int = 0, seed: int = 0):
    """Batches of ``dataset`` in the given order: straight from the caches for an
    :class:`EdemaDataset` (reused buffers, thread prefetch), a DataLoader otherwise."""
    if isinstance(dataset, EdemaDataset):
        return BatchReader(dataset, batches, pin_memory=torch.cuda.is_available())
    # An own generator: creating a loader must not draw from the global RNG, or a resumed
    # run's dropout masks would drift from an uninterrupted run's.
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed))
