"""Deterministic, sharded batch plans: the order of every batch is a pure function of
(seed, stream, epoch, step), so a run resumed mid-epoch sees exactly the batches an
uninterrupted run would, on any number of ranks.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _permutation(n: int, seed: int, stream: str, cycle: int) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}:{stream}:{cycle}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)


class BatchPlan:
    """Batches of one stream for one rank.

    ``primary`` streams define the epoch: epoch ``e`` is one permutation, cut into global
    batches of ``batch_size * world_size`` (the last one topped up from the start of the same
    permutation so every rank takes the same number of steps). Secondary streams are drawn from
    an endless chain of permutations, indexed by the global step, so across steps they sweep
    the whole dataset (the release only ever saw its first few retain batches).
    """

    def __init__(self, n: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, stream: str = "train", shuffle: bool = True):
        if n <= 0:
            raise ValueError(f"stream {stream!r} is empty")
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.stream, self.shuffle = seed, stream, shuffle

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def steps_per_epoch(self, multiple_of: int = 1) -> int:
        steps = -(-self.n // self.global_batch)
        return -(-steps // multiple_of) * multiple_of

    def _order(self, cycle: int) -> np.ndarray:
        return _permutation(self.n, self.seed, self.stream, cycle) if self.shuffle \
            else np.arange(self.n)

    def epoch(self, epoch: int, steps: int, start: int = 0) -> list[list[int]]:
        """Primary stream: this rank's batches for steps ``start..steps-1`` of ``epoch``."""
        order = self._order(epoch)
        out = []
        for step in range(start, steps):
            first = step * self.global_batch + self.rank * self.batch_size
            out.append([int(order[(first + j) % self.n]) for j in range(self.batch_size)])
        return out

    def steps(self, first_global_step: int, count: int) -> list[list[int]]:
        """Secondary stream: this rank's batches for ``count`` global steps from ``first_global_step``."""
        out = []
        cached: dict[int, np.ndarray] = {}
        for step in range(first_global_step, first_global_step + count):
            batch = []
            for j in range(self.batch_size):
                position = step * self.global_batch + self.rank * self.batch_size + j
                cycle, offset = divmod(position, self.n)
                if cycle not in cached:
                    cached[cycle] = self._order(cycle)
                batch.append(int(cached[cycle][offset]))
            out.append(batch)
        return out
