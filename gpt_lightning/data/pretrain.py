"""Sliding-window pretraining data: windows of ``max_length`` tokens every ``stride`` tokens.

The corpus is tokenized once into a memory-mapped cache (see ``token_cache``); the first
``1 - val_fraction`` of its tokens are for training and the rest for validation, so the
two never share text. A window starting at i gives inputs ids[i : i+L] and targets
ids[i+1 : i+L+1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gpt_lightning.download import cache_dir, fetch_dataset
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.data.sampler import EvalPadding, ResumableDataModule
from gpt_lightning.data.token_cache import expand_paths, load_tokens, tokenize_to_cache

# data=<name> -> file name of a known public corpus (see download.DATASETS)
CORPORA = {"verdict": "the-verdict.txt", "shakespeare": "tinyshakespeare.txt"}


class SlidingWindowDataset(Dataset):
    """Windows over ``tokens[start:end]`` of a memory-mapped token file."""

    def __init__(self, token_file: Path, start: int, end: int, max_length: int, stride: int) -> None:
        self.token_file, self.start, self.end = token_file, start, end
        self.max_length, self.stride = max_length, stride
        self._tokens: np.memmap | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        n = self.end - self.start
        return 0 if n <= self.max_length else (n - self.max_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._tokens is None:
            self._tokens = load_tokens(self.token_file)
        a = self.start + i * self.stride
        chunk = torch.from_numpy(self._tokens[a:a + self.max_length + 1].astype(np.int64))
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}  # (L,), (L,)


class WindowLoaders:
    """The loaders of a pretraining data module with ``train_set`` / ``val_set`` of windows (this
    module's and data/corpus.py's): resumable shuffled training batches, every validation window
    once across the ranks (ranks left without one score a window with no targets)."""

    def train_dataloader(self) -> DataLoader:
        sampler = self.make_sampler(len(self.train_set), train=True, seed=self.seed, shuffle=self.shuffle)
        drop_last = self.drop_last and len(sampler) >= self.batch_size
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=drop_last,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        sampler = self.make_sampler(len(self.val_set), train=False, seed=self.seed)
        return DataLoader(EvalPadding(self.val_set, _no_targets), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers)


class PretrainDataModule(WindowLoaders, ResumableDataModule):
    def __init__(self, name: str = "verdict", path: str | None = None, max_length: int = 256,
                 stride: int | None = None, batch_size: int = 2, val_fraction: float = 0.1,
                 num_workers: int = 0, shuffle: bool = True, drop_last: bool = True,
                 seed: int = 123, cache: str | None = None, progress: bool = True) -> None:
        super().__init__()
        if name not in CORPORA and name != "text":
            raise bad_value("data.name", name, f"one of {sorted(CORPORA) + ['text']}")
        if name == "text" and not path:
            raise bad_value("data.path", path, "data=text needs one: a UTF-8 text file, a folder or a glob "
                            "such as data.path='books/**/*.txt'")
        for key, value in (("data.max_length", max_length), ("data.batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise bad_value(key, value, "a positive integer")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise bad_value("data.num_workers", num_workers, "an integer >= 0 (0 = load batches in the main process)")
        stride = max_length if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise bad_value("data.stride", stride, "a positive integer (or null for data.max_length)")
        if not 0.0 < val_fraction < 1.0:
            raise bad_value("data.val_fraction", val_fraction, "a fraction in (0, 1)")
        self.name, self.path = name, path
        self.max_length, self.stride, self.batch_size = max_length, stride, batch_size
        self.val_fraction, self.num_workers = val_fraction, num_workers
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.cache = Path(cache).expanduser() if cache else cache_dir() / "tokens"
        self.progress = progress
        self.token_file: Path | None = None

    # Called on one process per node before setup(): download and tokenize once.
    def prepare_data(self) -> None:
        self._token_file()

    def _token_file(self) -> Path:
        if self.token_file is None:
            files = ([fetch_dataset(CORPORA[self.name], self.path)] if self.name in CORPORA
                     else _text_files(expand_paths(self.path)))
            self.token_file = tokenize_to_cache(files, self.cache, progress=self.progress)
        return self.token_file

    def setup(self, stage: str | None = None) -> None:
        token_file = self._token_file()
        n = len(load_tokens(token_file))
        split = int(n * (1 - self.val_fraction))
        need = self.max_length + 1
        for part, size in (("training", split), ("validation", n - split)):
            if size < need:
                fits = min(split, n - split) - 1  # the longest window both parts hold
                # both parts must hold a window: the smaller one is min(val_fraction, 1 - val_fraction) of the text
                least = int(need / min(self.val_fraction, 1 - self.val_fraction)) + 2
                advice = (f"use data.max_length<={fits} or more text" if fits >= 1 else
                          f"no window fits in so little text; give it at least {least:,} tokens "
                          f"(about {4 * least:,} characters) or a smaller data.max_length with more text")
                raise ConfigError(
                    f"{self.describe()} has {n:,} tokens, so its {part} part ({size:,} tokens, "
                    f"data.val_fraction={self.val_fraction}) is shorter than one window of "
                    f"data.max_length={self.max_length} + 1; {advice}"
                )
        self.train_set = SlidingWindowDataset(token_file, 0, split, self.max_length, self.stride)
        # validation windows do not overlap, so every validation token is scored once
        self.val_set = SlidingWindowDataset(token_file, split, n, self.max_length, self.max_length)
        self.num_tokens = n

    def describe(self) -> str:
        return self.path or CORPORA.get(self.name, self.name)


def _text_files(files: list[Path]) -> list[Path]:
    """``files`` if each is plain text; JSON Lines, parquet or another format stops with one line
    (it would otherwise be tokenized as text, JSON markup and all)."""
    from gpt_lightning.data.sources import TEXT, file_kind

    for path in files:
        kind = file_kind(path)  # refuses CSV, archives, binary files ... by name
        if kind != TEXT:
            raise ConfigError(f"{path} is {kind}, which data=text would read as plain text; use data=corpus "
                              f"data.path={str(path)!r} (one document per record, data.text_column names the field)")
    return files


def _no_targets(item: dict) -> dict:
    """The window with every target ignored (-100): a rank's zero-weight validation batch."""
    return {**item, "targets": torch.full_like(item["targets"], -100)}
