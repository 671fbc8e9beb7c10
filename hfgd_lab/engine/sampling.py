"""Resumable, shardable sampling: every training sample carries its own seed.

The sampler yields ``(index, seed)`` pairs from a permutation fixed by
``(seed, epoch)``; the dataset wrapper seeds ``torch`` and ``random`` with that
sample seed around its transform. Augmentation then depends only on the sample's
position in the stream, not on worker count or process state, so a run stopped at
iteration N and resumed gives the same batches as one that never stopped, and
``torchrun`` ranks draw disjoint shards of the same stream.
"""
from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset, Sampler


class InfiniteSampler(Sampler):
    """Endless ``(index, sample_seed)`` stream, sharded by rank, starting at ``start``
    (counted in this rank's samples)."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start: int = 0):
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world = size, seed, rank, world_size
        self.shuffle, self.start = shuffle, start

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self):
        pos = self.start * self.world + self.rank  # global position of this rank's next sample
        while True:
            epoch, offset = divmod(pos, self.size)
            order = self._epoch(epoch)
            while offset < self.size:
                yield order[offset], (self.seed * 7_919 + pos * 104_729 + 17) % (2 ** 63)
                pos += self.world
                offset += self.world
            # the next global position of this rank falls into a later epoch

    def __len__(self):  # pragma: no cover - endless; DataLoader only asks for display
        return 2 ** 62


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` runs its transform under ``seed``
    without disturbing the caller's RNG streams."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
