"""A seeded permutation of ``range(n)`` computed on the fly, and the sampler built on it.

``torch.randperm(n).tolist()`` (what ``ResumableSampler`` does) holds every index as a Python
int: ~36 bytes each, in every rank and every DataLoader worker, i.e. gigabytes for the ~10M
windows of a 10B-token corpus. Here position ``j`` of the epoch's order is computed from ``j``:
a 4-round Feistel network (a bijection on ``[0, 2^b)``, b even, 2^b < 4n) with cycle-walking
back into ``[0, n)``. Memory is one block of positions, whatever ``n``; a resumed epoch starts at
any position in O(1). Hand-written because neither torch nor numpy offers a lazy permutation.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from gpt_lightning.data.sampler import ResumableSampler

_C1, _C2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


class FeistelPermutation:
    """``perm(positions)`` -> the items at those positions of a seeded order of ``range(n)``."""

    def __init__(self, n: int, seed: int, rounds: int = 4) -> None:
        self.n = n
        bits = max(2, (max(n, 2) - 1).bit_length())
        bits += bits % 2
        self.half = np.uint64(bits // 2)
        self.mask = np.uint64((1 << (bits // 2)) - 1)
        self.keys = [np.uint64(k) for k in np.random.default_rng(seed).integers(0, 2**63, rounds)]

    def _f(self, r: np.ndarray, key: np.uint64) -> np.ndarray:
        h = (r + key) * _C1
        h ^= h >> np.uint64(31)
        h *= _C2
        h ^= h >> np.uint64(29)
        return h & self.mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self.half, x & self.mask
        for key in self.keys:
            left, right = right, left ^ self._f(right, key)
        return (left << self.half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            y = self._encrypt(np.asarray(positions, dtype=np.uint64))
            out = y >= self.n
            while out.any():  # cycle-walk: a bijection on [0, 2^b) restricted to [0, n)
                y[out] = self._encrypt(y[out])
                out = y >= self.n
        return y.astype(np.int64)


class PermutedSampler(ResumableSampler):
    """``ResumableSampler`` (same sharding, padding, skip and resume) with a lazy permutation."""

    BLOCK = 8192

    def __iter__(self) -> Iterator[int]:
        n, world, rank = self.num_items, self.world_size, self.rank
        per = len(self) if self.pad else len(range(rank, n, world))
        start = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            start = self._skip[1]
            self._skip = None
        if not self.pad and per == 0:
            if n and start == 0:
                yield n  # EvalPadding's zero-weight item: this rank still runs a step
            return
        perm = FeistelPermutation(n, self.seed + self.epoch) if self.shuffle else None
        for t0 in range(start, per, self.BLOCK):
            j = rank + world * np.arange(t0, min(t0 + self.BLOCK, per), dtype=np.int64)
            j %= n  # padding repeats the first positions, as ResumableSampler does
            yield from (perm(j) if perm is not None else j).tolist()

