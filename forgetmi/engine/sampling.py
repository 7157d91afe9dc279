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
    the whole dataset (the release only ever saw its first few retain batches). A lead stream
    (SCRUB's max-pass) takes one permutation per epoch, every row exactly once (:meth:`once`).
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

    def once(self, epoch: int, steps: int, start: int = 0) -> list[list[int]]:
        """A pass stream: this rank's batches for steps ``start..steps-1`` of one pass over
        permutation ``epoch`` in ``steps`` global steps, every row exactly once.

        Batches are full except in a trailing block of steps whose rows are shared evenly, so
        that no rank's batch is empty (every rank must take every step) and a pass rounded up
        to a multiple of the accumulation still repeats no row.
        """
        slots, world = steps * self.world_size, self.world_size
        if self.n < slots:
            raise ValueError(f"stream {self.stream!r}: {self.n} rows cannot fill {steps} steps "
                             f"on {world} process(es) without repeating rows")
        spare = steps * self.global_batch - self.n   # slots the pass leaves empty
        tail = 0                                      # trailing steps that share the shortfall
        while tail * self.global_batch - spare < tail * world:
            tail += 1
        sizes = [self.batch_size] * (slots - tail * world)
        rows_left, batches_left = tail * self.global_batch - spare, tail * world
        sizes += [rows_left // batches_left + (k < rows_left % batches_left)
                  for k in range(batches_left)]
        order, ends = self._order(epoch), np.cumsum([0] + sizes)
        return [[int(i) for i in order[ends[k]:ends[k + 1]]]
                for k in (step * world + self.rank for step in range(start, steps))]

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
