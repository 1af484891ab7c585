"""``data=corpus``: pretraining on corpora of any size, from text, JSON Lines, parquet or the hub.

The corpus is prepared once into shards (``data/prepare.py``, ``python prepare.py``;
``train.py`` does it on first use when nobody did) and read from them: training windows of
``max_length + 1`` ids every ``stride`` ids across all training shards, memory-mapped lazily in
each DataLoader worker, in the order of a seeded lazy permutation (``data/permutation.py``),
sharded across ranks and resumable mid-epoch like the other pretraining data.

Validation: ``val_split=documents`` holds out whole documents (each with probability
``val_fraction``) into their own shards, the FineWeb convention of a separate validation shard;
``val_split=tail`` uses the last ``val_fraction`` of the training stream (for corpora of few
documents, e.g. one book). Either way no validation window overlaps training text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from gpt_lightning.data.permutation import PermutedSampler
from gpt_lightning.data.prepare import find_prepared, identity_of, prepare, settings_of
from gpt_lightning.data.pretrain import WindowLoaders
from gpt_lightning.data.sampler import ResumableDataModule
from gpt_lightning.data.shards import TokenStream
from gpt_lightning.data.sources import HubSpec, list_files
from gpt_lightning.download import cache_dir
from gpt_lightning.errors import ConfigError, bad_value


class ShardWindows(Dataset):
    """Windows over ids ``start .. end`` of a :class:`TokenStream` (across shard boundaries)."""

    def __init__(self, stream: TokenStream, start: int, end: int, max_length: int, stride: int) -> None:
        self.stream, self.start, self.end = stream, start, end
        self.max_length, self.stride = max_length, stride

    def __len__(self) -> int:
        n = self.end - self.start
        return 0 if n <= self.max_length else (n - self.max_length - 1) // self.stride + 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a = self.start + i * self.stride
        chunk = torch.from_numpy(self.stream.read(a, self.max_length + 1).astype(np.int64))
        return {"input_ids": chunk[:-1], "targets": chunk[1:]}  # (L,), (L,)


class CorpusDataModule(WindowLoaders, ResumableDataModule):
    sampler_class = PermutedSampler

    def __init__(self, path: str | list[str] | None = None, hub: str | None = None, hub_config: str | None = None,
                 split: str = "train", streaming: bool = False, data_files: str | list[str] | None = None,
                 revision: str | None = None, text_column: str = "text", max_length: int | None = None,
                 stride: int | None = None, batch_size: int = 8,
                 val_split: Literal["documents", "tail"] = "documents", val_fraction: float = 0.01,
                 shard_tokens: int = 100_000_000, shuffle_documents: bool = False,
                 prepare_workers: int | None = None, num_workers: int = 2, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 123, cache: str | None = None, progress: bool = True,
                 verify: bool = False) -> None:
        super().__init__()
        if bool(path) == bool(hub):
            raise bad_value("data.path", path, "data=corpus reads either data.path (text, .jsonl or .parquet files: "
                            "a file, a folder or a glob) or data.hub (a Hugging Face dataset name), exactly one")
        for key, value in (("data.batch_size", batch_size), ("data.shard_tokens", shard_tokens)):
            if value < 1:
                raise bad_value(key, value, "a positive integer")
        if max_length is not None and max_length < 1:
            raise bad_value("data.max_length", max_length, "a positive integer (or null for model.context_length)")
        if stride is not None and stride < 1:
            raise bad_value("data.stride", stride, "a positive integer (or null for data.max_length)")
        if not 0.0 < val_fraction < 1.0:
            raise bad_value("data.val_fraction", val_fraction, "a fraction in (0, 1), e.g. 0.01")
        if prepare_workers is not None and prepare_workers < 1:
            raise bad_value("data.prepare_workers", prepare_workers, "a number of processes >= 1, or null for every core")
        if num_workers < 0:
            raise bad_value("data.num_workers", num_workers, "0 (load in the main process) or more worker processes")
        if not text_column:
            raise bad_value("data.text_column", text_column, "the name of the field or column that holds the text")
        self.path, self.text_column = path, text_column
        self.hub = HubSpec(hub, hub_config, split, streaming, data_files, revision) if hub else None
        self.max_length, self._stride, self.batch_size = max_length, stride, batch_size
        self.val_split, self.val_fraction = val_split, val_fraction
        self.shard_tokens, self.shuffle_documents = shard_tokens, shuffle_documents
        self.prepare_workers, self.num_workers = prepare_workers, num_workers
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.cache = Path(cache).expanduser() if cache else cache_dir() / "tokens"
        self.progress, self.verify = progress, verify
        self.folder: Path | None = None
        self.manifest: dict | None = None

    @property
    def stride(self) -> int:
        return self._stride or self.max_length

    def describe(self) -> str:
        return f"data.hub={self.hub.name}" if self.hub else str(self.path)

    # ---- preparing: one process per node (Lightning), one per corpus (the lock) ----
    def prepare_data(self) -> None:
        self._prepared()

    def _settings(self) -> dict:
        return settings_of(self.text_column, self.shard_tokens, self.val_split, self.val_fraction,
                           self.shuffle_documents, self.seed)

    def _prepared(self) -> tuple[Path, dict]:
        if self.manifest is None:
            files = None if self.hub else list_files(self.path)
            folder, manifest = find_prepared(self.cache, identity_of(files, self.hub), self._settings(), self.verify)
            if manifest is None:
                folder, manifest = prepare(cache=self.cache, path=self.path, hub=self.hub, text_column=self.text_column,
                                           shard_tokens=self.shard_tokens, val_split=self.val_split,
                                           val_fraction=self.val_fraction, shuffle_documents=self.shuffle_documents,
                                           seed=self.seed, workers=self.prepare_workers, progress=self.progress)
            self.folder, self.manifest = folder, manifest
        return self.folder, self.manifest

    def setup(self, stage: str | None = None) -> None:
        folder, manifest = self._prepared()
        train = TokenStream(folder, manifest["train"])
        n = len(train)
        if self.val_split == "documents":
            val, split, val_start, val_end = TokenStream(folder, manifest["val"]), n, 0, None
        else:
            split = int(n * (1 - self.val_fraction))
            val, val_start, val_end = train, split, n
        val_end = len(val) if val_end is None else val_end
        need = self.max_length + 1
        for part, size in (("training", split), ("validation", val_end - val_start)):
            if size < need:
                advice = ("use data.val_split=tail (the last data.val_fraction of the tokens), a larger "
                          "data.val_fraction or more documents" if part == "validation" and self.val_split == "documents"
                          else "use a smaller data.max_length or more text")
                docs = manifest["totals"]["train_documents"] + manifest["totals"]["val_documents"]
                raise ConfigError(f"{self.describe()} has {n + len(val) * (val is not train):,} tokens in {docs:,} "
                                  f"documents, so its {part} part ({size:,} tokens, data.val_split={self.val_split}, "
                                  f"data.val_fraction={self.val_fraction}) is shorter than one window of "
                                  f"data.max_length={self.max_length} + 1; {advice}")
        self.train_set = ShardWindows(train, 0, split, self.max_length, self.stride)
        self.val_set = ShardWindows(val, val_start, val_end, self.max_length, self.max_length)
        self.num_tokens = n
