"""A distributed, seeded sampler that can resume in the middle of an epoch.

Lightning's own mid-epoch resume restarts the epoch's data from its first batch. This
sampler shards the indices across ranks itself (so the Trainer runs with
``use_distributed_sampler=False``) and, once told how many batches of an epoch were
already trained on, skips exactly those on the first pass of that epoch.

Evaluation shards are disjoint and not padded (every item is scored once), but a rank
must not be left without work: Lightning stops DDP with "DataLoader within local rank has
zero length". A rank whose share is empty gets the index ``num_items``, which
:class:`EvalPadding` serves as a copy of item 0 whose targets are all ignored, so it
adds nothing to the token-weighted loss.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    def __init__(self, num_items: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        self.num_items, self.shuffle, self.seed = num_items, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, items to skip on this rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, epoch: int, items: int) -> None:
        """Skip the first ``items`` of this rank's indices the next time ``epoch`` is iterated."""
        self._skip = (epoch, items)

    def __len__(self) -> int:
        """Items this rank sees in a whole epoch (a resumed epoch yields fewer)."""
        if self.pad:
            return math.ceil(self.num_items / self.world_size)
        return len(range(self.rank, self.num_items, self.world_size)) or int(self.num_items > 0)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        if self.pad:  # equal length on every rank, as DDP needs the same number of steps
            total = len(self) * self.world_size
            order += order[: total - len(order)]
        mine = order[self.rank::self.world_size]
        if not mine and not self.pad and self.num_items:
            mine = [self.num_items]  # EvalPadding's zero-weight item: this rank still runs a step
        if self._skip is not None and self._skip[0] == self.epoch:
            mine = mine[self._skip[1]:]
            self._skip = None
        return iter(mine)


class ResumableDataModule(L.LightningDataModule):
    """Counts the training batches of the current epoch and saves that in checkpoints.

    The count is taken in ``on_before_batch_transfer``, i.e. when a batch is handed to
    the training step, so the DataLoader's prefetching does not skew it. On restore the
    train sampler skips what the interrupted run had already used.
    """

    batch_size: int
    sampler_class = ResumableSampler  # data/permutation.py's sampler for corpora of any size

    def __init__(self) -> None:
        super().__init__()
        self._position = (0, 0)  # (epoch, training batches used in it)

    def make_sampler(self, num_items: int, train: bool, seed: int, shuffle: bool | None = None) -> ResumableSampler:
        """Training: shuffled (unless ``shuffle`` is False), padded to equal length per rank,
        resumable. Evaluation: in order, each rank a disjoint share, nothing repeated."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        shuffle = train if shuffle is None else shuffle
        sampler = self.sampler_class(num_items, shuffle=shuffle, seed=seed, rank=rank, world_size=world, pad=train)
        if train:
            epoch, batches = self._position
            if batches:
                sampler.skip(epoch, batches * self.batch_size)
        return sampler

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if trainer is not None and trainer.training:
            epoch, batches = self._position
            self._position = (trainer.current_epoch, batches + 1 if epoch == trainer.current_epoch else 1)
        return batch

    def state_dict(self) -> dict:
        """Position in the epoch, and what it means: batch size, ranks, batches per epoch
        (a resume checks them, see ``resume``)."""
        trainer = self.trainer
        per_epoch = getattr(trainer, "num_training_batches", None) if trainer is not None else None
        return {"epoch": self._position[0], "batches": self._position[1], "batch_size": self.batch_size,
                "world_size": trainer.world_size if trainer is not None else 1,
                "epoch_batches": int(per_epoch) if isinstance(per_epoch, int) else None}

    def load_state_dict(self, state: dict) -> None:
        self._position = (int(state["epoch"]), int(state["batches"]))


class EvalPadding(Dataset):
    """An evaluation dataset with one more index, ``len(dataset)``: item 0 with ``ignore``
    applied (every target ignored), for a rank whose share of the items is empty."""

    def __init__(self, dataset, ignore: Callable) -> None:
        self.dataset, self.ignore = dataset, ignore

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if i == len(self.dataset):
            return self.ignore(self.dataset[0])
        return self.dataset[i]
