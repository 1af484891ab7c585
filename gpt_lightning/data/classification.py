"""Text classification data: labelled texts from CSV, TSV or JSON Lines, split, tokenized, batched.

A file holds one record per row with a text column and a label column (names set by
``text_column`` / ``label_column``; a file without a header row names its columns with
``columns``, e.g. the SMS Spam Collection's ``[label, text]``). The format follows the file's
suffix: ``.csv``, ``.tsv`` (or ``.txt`` and suffix-less files: tab-separated, as the SMS Spam
Collection ships) and ``.jsonl``. Rows are read with the standard library's ``csv`` and
``json`` modules: the files are small (thousands of rows), and these parse every dialect
pandas' defaults do (quoted fields with embedded tabs or newlines) without a new dependency.

Labels are the distinct values of the label column in sorted order (``labels`` fixes the
order and rejects others); their ids are the positions in that list (``id2label``).
``balance`` undersamples every class to the size of the smallest (as "LLMs from scratch"
chapter 6 does with ham/spam), then the records are shuffled with ``seed`` and cut into
train/val/test by fraction, unless ``train_path``/``val_path``/``test_path`` give the splits.

A batch is right-padded with ``<|endoftext|>``: ``{"input_ids" (B, T), "attention_mask"
(B, T) 1 for real tokens, "labels" (B,)}``; a text longer than ``max_length`` tokens keeps
its first ``max_length`` tokens, and how many were cut is counted (``num_truncated``).
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from gpt_lightning.data.instruct import MaxLength, _check_int, check_fractions, split_records
from gpt_lightning.data.sampler import EvalPadding, ResumableDataModule
from gpt_lightning.download import fetch
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.tokenizer import EOT_ID, get_tokenizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", "": "tsv", ".jsonl": "jsonl"}
csv.field_size_limit(1 << 24)  # long texts in one field


# ----------------------------------------------------------------------------- records
def read_rows(path: str | Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a CSV, TSV or JSON Lines file as dicts (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}; give a .csv, .tsv "
                          "or .jsonl file of labelled texts")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: unknown format {path.suffix!r}; name the file *.csv, *.tsv or *.jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    if fmt == "jsonl":
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: line {line_no}: invalid JSON at column {err.colno}: {err.msg}") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}: line {line_no} is not a JSON object")
            rows.append(row)
        return rows
    reader = csv.reader(text.splitlines(keepends=True), delimiter="," if fmt == "csv" else "\t")
    table = [row for row in reader if row]
    if not table:
        raise ConfigError(f"{path}: the file is empty")
    names = list(columns) if columns else table.pop(0)
    rows = []
    for number, row in enumerate(table, start=1 if columns else 2):
        if len(row) != len(names):
            raise ConfigError(f"{path}: row {number} has {len(row)} fields, expected {len(names)} ({names}); "
                              + ("check data.columns" if columns else "check the header row or the delimiter"))
        rows.append(dict(zip(names, row)))
    return rows


def labelled_texts(rows: list[dict], path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """(text, label) of each row; a missing column or a non-text value is one line naming the row."""
    if not rows:
        raise ConfigError(f"{path}: holds no records")
    for key, column in (("data.text_column", text_column), ("data.label_column", label_column)):
        if column not in rows[0]:
            raise bad_value(key, column, f"a column of {path}; it has {sorted(rows[0])}")
    out = []
    for number, row in enumerate(rows, start=1):
        text, label = row.get(text_column), row.get(label_column)
        if not isinstance(text, str):
            raise ConfigError(f"{path}: record {number}: {text_column!r} is {text!r}, expected a string")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ConfigError(f"{path}: record {number}: {label_column!r} is {label!r}, expected a string or an integer")
        out.append((text, str(label)))
    return out


def balance_classes(records: list[tuple[str, str]], seed: int) -> list[tuple[str, str]]:
    """Every label undersampled (at random, ``seed``) to the count of the rarest one; order kept."""
    counts = Counter(label for _, label in records)
    smallest = min(counts.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted(counts):
        indices = [i for i, (_, lab) in enumerate(records) if lab == label]
        keep.update(rng.sample(indices, smallest))
    return [r for i, r in enumerate(records) if i in keep]


# ----------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Example:
    ids: list[int]
    label: int
    ignored: bool = False  # a rank's zero-weight padding (EvalPadding)


@dataclass(frozen=True)
class ClassificationCollator:
    """Right-pads examples into ``input_ids``, ``attention_mask`` and ``labels`` (-100: ignored)."""

    max_length: int | None = None
    pad_id: int = EOT_ID

    def __call__(self, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        seqs = [e.ids[: self.max_length] if self.max_length else e.ids for e in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        labels = torch.tensor([-100 if e.ignored else e.label for e in batch], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def encode_texts(texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text; an empty text is one ``<|endoftext|>`` (something to read the label from)."""
    return [ids or [EOT_ID] for ids in get_tokenizer().encode_batch(list(texts))]


# ----------------------------------------------------------------------------- data module
class ClassificationDataModule(MaxLength, ResumableDataModule):
    """Labelled texts split into train/val/test and served as padded batches.

    Arguments are the ``data`` node (conf/data/classification.yaml, described there). After
    :meth:`setup`: ``labels`` (id -> name), ``splits`` {split: [(text, label name)]},
    ``num_truncated`` and ``class_counts``.
    """

    def __init__(self, path: str | None = None, train_path: str | None = None, val_path: str | None = None,
                 test_path: str | None = None, text_column: str = "text", label_column: str = "label",
                 columns: list[str] | None = None, labels: list[str] | None = None, balance: bool = False,
                 batch_size: int = 8, max_length: int | None = None, train_fraction: float = 0.7,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 123, num_workers: int = 0,
                 dataset: str | None = None) -> None:
        super().__init__()
        _check_int("data.batch_size", batch_size, minimum=1)
        _check_int("data.num_workers", num_workers, minimum=0)
        if not isinstance(balance, bool):
            raise bad_value("data.balance", balance, "true or false")
        given = [p for p in (train_path, val_path, test_path) if p]
        if given and len(given) != 3:
            raise bad_value("data.train_path" if not train_path else "data.val_path" if not val_path else "data.test_path",
                            None, "all three of data.train_path, data.val_path, data.test_path (or none, with data.path)")
        if given and path:
            raise bad_value("data.path", path, "null when data.train_path/val_path/test_path give the splits")
        if not given and not path and not dataset:
            raise bad_value("data.path", path, "a .csv, .tsv or .jsonl file of labelled texts (or the three "
                            "data.train_path/val_path/test_path)")
        if not given:
            check_fractions(train_fraction, val_fraction, test_fraction)
        if columns is not None and (not columns or len(set(columns)) != len(columns)):
            raise bad_value("data.columns", columns, "distinct column names for a file without a header row, or null")
        if columns is not None and text_column not in columns:
            raise bad_value("data.text_column", text_column, f"one of data.columns={columns}")
        if columns is not None and label_column not in columns:
            raise bad_value("data.label_column", label_column, f"one of data.columns={columns}")
        if labels is not None and (len(labels) < 2 or len(set(labels)) != len(labels)):
            raise bad_value("data.labels", labels, "at least two distinct label names, or null for those in the data")
        if dataset is not None:
            from gpt_lightning.data.sms_spam import DATASETS

            if dataset not in DATASETS:
                raise bad_value("data.dataset", dataset, f"one of {sorted(DATASETS)} or null")
        self.path, self.dataset = path, dataset
        self.files = (train_path, val_path, test_path) if given else None
        self.text_column, self.label_column = text_column, label_column
        self.columns = columns
        self.label_names = labels
        self.balance = balance
        self.batch_size = batch_size
        self.max_length = max_length
        self.fractions = (train_fraction, val_fraction, test_fraction)
        self.seed = seed
        self.num_workers = num_workers
        self.labels: list[str] = []
        self.splits: dict[str, list[tuple[str, str]]] = {}
        self._examples: dict[str, list[Example]] = {}
        self.class_counts: dict[str, int] = {}

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def num_truncated(self) -> int:
        """Texts (all splits) longer than ``max_length`` tokens, cut to it."""
        if not self.max_length:
            return 0
        return sum(len(e.ids) > self.max_length for examples in self._examples.values() for e in examples)

    def _source(self) -> Path:
        if self.path:
            return fetch(Path(self.path).name, None, self.path)  # type: ignore[arg-type]
        from gpt_lightning.data.sms_spam import fetch_sms_spam

        return fetch_sms_spam(self.dataset)

    def prepare_data(self) -> None:
        if not self.files and not self.path:
            self._source()  # download once

    def _read(self, path: Path) -> list[tuple[str, str]]:
        return labelled_texts(read_rows(path, self.columns), path, self.text_column, self.label_column)

    def setup(self, stage: str | None = None) -> None:
        if self._examples:
            return
        if self.files:
            parts = [self._read(Path(p).expanduser()) for p in self.files]
            if self.balance:
                parts[0] = balance_classes(parts[0], self.seed)
        else:
            records = self._read(self._source())
            if self.balance:
                records = balance_classes(records, self.seed)
            parts = list(split_records(records, *self.fractions, seed=self.seed))
        found = sorted({label for part in parts for _, label in part})
        if self.label_names is not None:
            unknown = sorted(set(found) - set(self.label_names))
            if unknown:
                raise bad_value("data.labels", self.label_names, f"a list holding every label in the data; missing {unknown}")
            self.labels = list(self.label_names)
        else:
            self.labels = found
        if len(self.labels) < 2:
            raise ConfigError(f"the data holds only the label {self.labels}; classification needs at least two")
        index = {name: i for i, name in enumerate(self.labels)}
        self.splits = dict(zip(SPLITS, parts))
        self.class_counts = dict(Counter(label for _, label in parts[0]))
        self._examples = {split: [Example(ids, index[label]) for ids, (_, label) in
                                  zip(encode_texts([t for t, _ in part]), part)]
                          for split, part in self.splits.items()}
        if self.num_truncated:
            _log_truncation(self.num_truncated, sum(map(len, parts)), self.max_length)

    @property
    def collator(self) -> ClassificationCollator:
        return ClassificationCollator(max_length=self.max_length)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def split_loader(self, split: str) -> DataLoader:
        """All of one split, in order, on this process (for the metrics after training)."""
        return DataLoader(self._examples[split], batch_size=self.batch_size, collate_fn=self.collator)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._examples:
            raise RuntimeError(f"ClassificationDataModule.setup() must run before the {split} dataloader is built")
        examples = self._examples[split]
        train = split == "train"
        return DataLoader(examples if train else EvalPadding(examples, _ignored), batch_size=self.batch_size,
                          sampler=self.make_sampler(len(examples), train=train, seed=self.seed, shuffle=shuffle),
                          collate_fn=self.collator, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)


def _ignored(example: Example) -> Example:
    return Example(example.ids, example.label, ignored=True)


@rank_zero_only
def _log_truncation(truncated: int, total: int, max_length: int | None) -> None:
    log.warning("%d of %d texts are longer than data.max_length=%s tokens and keep only their first %s tokens",
                truncated, total, max_length, max_length)
