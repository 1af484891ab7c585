"""Instruction fine-tuning data: Alpaca-style records, split, tokenized and batched.

A record is ``{"instruction": str, "input": str (optional, may be ""), "output": str}``;
a file is a JSON list of records or JSON Lines (``.jsonl``, one record per line).

Each record is tokenized once, as prompt ids (the template up to ``### Response:\\n``) and
response ids (the output followed by ``<|endoftext|>``), so the collate function knows
where the prompt ends. A batch is padded to its longest sequence with ``<|endoftext|>``;
inputs are tokens[:-1] and targets tokens[1:]. In the targets, padding is -100 (ignored by
the loss) except the record's own end-of-text, which the model must learn to predict to
stop; with ``mask_prompt`` the prompt positions are -100 too, so only the response is
learned. A sequence longer than ``max_length + 1`` tokens is cut so that inputs and
targets never exceed ``max_length`` positions (the model's context length).
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from gpt_lightning.download import fetch_dataset
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.data.template import PromptTemplate, template_from_config
from gpt_lightning.tokenizer import EOT_ID, Tokenizer, get_tokenizer
from gpt_lightning.data import IGNORE_INDEX
from gpt_lightning.data.sampler import EvalPadding, ResumableDataModule

log = logging.getLogger(__name__)

DATASET_NAME = "instruction-data.json"  # the public 1,100-record set (LLMs from scratch, ch. 7)
SPLITS = ("train", "val", "test")
RECORD_HELP = 'an object with string keys "instruction", "output" and optionally "input"'
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


# ----------------------------------------------------------------------------- records
def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read and check instruction records from a JSON list or a JSON Lines (``.jsonl``) file.

    Returns the records with ``input`` filled in as "" where it is missing. Every problem
    is a one-line :class:`ConfigError` naming the file and, for a bad record, its index.
    """
    path = Path(path)
    located = read_located(path, "file of instruction records, or be null for the public set",
                           empty=f"a JSON list of records, each {RECORD_HELP}",
                           none=f"; it needs at least one record, {RECORD_HELP}")
    return [_check_record(path, where, record) for where, record in located]


def read_located(path: Path, what: str, empty: str, none: str = "") -> list[tuple[str, Any]]:
    """(where, record) pairs of a JSON list or JSON Lines (``.jsonl``) file of records, for the
    fine-tuning data modules: a missing, non-UTF-8, empty or record-less file is one line
    (``what`` the file should hold, ``empty`` what an empty one needs, ``none`` added when it
    holds no records)."""
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "no such file"
        raise ConfigError(f"{path}: {problem}; data.path must name a JSON or JSON Lines (.jsonl) {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty; it needs {empty}")
    located = _parse_json_lines(path, text) if path.suffix == ".jsonl" else _parse_json(path, text)
    if not located:
        raise ConfigError(f"{path}: holds no records{none}")
    return located


def _parse_json(path: Path, text: str) -> list[tuple[str, Any]]:
    """Records of a JSON file, each with its location for messages ("record 3 (line 12)")."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        hint = "; a file with one record per line must be named *.jsonl" if err.msg == "Extra data" else ""
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}{hint}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: the top level is a JSON {_json_type(data)}, expected a list of records "
                          "([{...}, ...]) or a .jsonl file with one record per line")
    lines = _element_lines(text, len(data))
    return [(f"record {index} (line {line})", record) for index, (record, line) in enumerate(zip(data, lines), start=1)]


def _element_lines(text: str, count: int) -> list[int]:
    """The line on which each element of a JSON list starts (the list parsed without error)."""
    decoder, lines, pos = json.JSONDecoder(), [], text.index("[") + 1
    for _ in range(count):
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
    return lines


def _parse_json_lines(path: Path, text: str) -> list[tuple[str, Any]]:
    """Records of a JSON Lines file (blank lines skipped), located as "record 3 (line 5)"."""
    located = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"record {len(located) + 1} (line {line_no})"
        try:
            located.append((where, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: {where}: invalid JSON at column {err.colno}: {err.msg}") from None
    return located


def _check_record(path: Path, where: str, record: Any) -> dict[str, Any]:
    """The record with ``input`` defaulted to "", or a ConfigError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: {where} is a JSON {_json_type(record)}, expected {RECORD_HELP}")
    for key in ("instruction", "output"):
        if key not in record:
            raise ConfigError(f"{path}: {where} has no {key!r} key (keys: {sorted(record)}); "
                              f"each record must be {RECORD_HELP}")
    for key in ("instruction", "input", "output"):
        value = record.get(key, "")
        if not isinstance(value, str):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ConfigError(f"{path}: {where}: {key!r} is a JSON {_json_type(value)} ({shown}), "
                              "expected a string")
    return {**record, "input": record.get("input", "")}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------- split
def check_fractions(train_fraction: float, val_fraction: float, test_fraction: float) -> None:
    """Each fraction must be in (0, 1] and together at most 1 (the rest is left unused)."""
    values = {"train_fraction": train_fraction, "val_fraction": val_fraction, "test_fraction": test_fraction}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise bad_value(f"data.{key}", value, "a fraction of the records in (0, 1]")
    total = sum(values.values())
    if total > 1 + 1e-9:
        raise bad_value("data.train_fraction", train_fraction,
                        f"train + val + test fractions sum to {total:g}; they must sum to at most 1")


def split_records(records: Sequence[dict], train_fraction: float = 0.85, val_fraction: float = 0.10,
                  test_fraction: float = 0.05, seed: int = 123) -> tuple[list[dict], list[dict], list[dict]]:
    """Shuffle with ``seed`` and cut into train, val and test lists.

    Sizes are the fractions of ``len(records)`` rounded down; when the fractions sum to 1
    the training split takes what rounding leaves over (1,100 records: 935/110/55).
    """
    check_fractions(train_fraction, val_fraction, test_fraction)
    total = len(records)
    n_val, n_test = _count(total, val_fraction), _count(total, test_fraction)
    whole = math.isclose(train_fraction + val_fraction + test_fraction, 1.0)
    n_train = total - n_val - n_test if whole else _count(total, train_fraction)
    for key, fraction, size in (("train_fraction", train_fraction, n_train), ("val_fraction", val_fraction, n_val),
                                ("test_fraction", test_fraction, n_test)):
        if size == 0:
            raise bad_value(f"data.{key}", fraction, f"it leaves no record of {total} in that split; use a larger one")
    order = list(range(total))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    return shuffled[:n_train], shuffled[n_train:n_train + n_val], shuffled[n_train + n_val:n_train + n_val + n_test]


def _count(total: int, fraction: float) -> int:
    return math.floor(total * fraction + 1e-9)  # 1100 * 0.1 is 110.00000000000001 in floating point


# ----------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Example:
    """One tokenized record: the prompt, then the response ending in ``<|endoftext|>``."""

    prompt_ids: list[int]
    response_ids: list[int]
    ignored: bool = False  # every target ignored: a rank's zero-weight padding (see EvalPadding)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def tokenize_records(records: Sequence[dict], template: PromptTemplate,
                     tokenizer: Tokenizer | None = None) -> list[Example]:
    """Tokenize each record once into prompt and response ids (the response gets end-of-text)."""
    tokenizer = tokenizer or get_tokenizer()
    prompts = tokenizer.encode_batch([template.format_prompt(r["instruction"], r["input"]) for r in records])
    responses = tokenizer.encode_batch([r["output"] for r in records])
    return [Example(prompt, response + [tokenizer.eot_id]) for prompt, response in zip(prompts, responses)]


def count_truncated(examples: Sequence[Example], max_length: int | None) -> int:
    """How many examples the collate function cuts (longer than ``max_length + 1`` tokens)."""
    if max_length is None:
        return 0
    return sum(example.num_tokens > max_length + 1 for example in examples)


@dataclass(frozen=True)
class InstructCollator:
    """Pads a list of :class:`Example` into ``input_ids`` and ``targets`` (see the module docstring).

    Returns ``{"input_ids": (B, T) long, "targets": (B, T) long}``.
    """

    max_length: int | None = None  # most input positions per sequence; None: no limit
    mask_prompt: bool = True  # -100 on the prompt's targets, so only the response is learned
    pad_id: int = EOT_ID
    ignore_index: int = IGNORE_INDEX

    def __call__(self, batch: Sequence[Example]) -> dict[str, torch.Tensor | int]:
        keep = None if self.max_length is None else self.max_length + 1
        sequences = [(example.prompt_ids + example.response_ids)[:keep] for example in batch]
        width = max(map(len, sequences))
        tokens = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(batch), width - 1), self.ignore_index, dtype=torch.long)
        for row, (example, sequence) in enumerate(zip(batch, sequences)):
            length = len(sequence)
            tokens[row, :length] = torch.tensor(sequence, dtype=torch.long)
            targets[row, :length - 1] = tokens[row, 1:length]  # padding after the record stays -100
            if self.mask_prompt:
                targets[row, :max(min(len(example.prompt_ids), length) - 1, 0)] = self.ignore_index
            if example.ignored:
                targets[row] = self.ignore_index
        return {
            "input_ids": tokens[:, :-1].contiguous(),
            "targets": targets,
        }


# ----------------------------------------------------------------------------- data module
class MaxLength:
    """``data.max_length`` of the fine-tuning data modules: most input positions per sequence
    (the model's context length when null; train/job.py fills it in), checked when set."""

    _max_length: int | None = None

    @property
    def max_length(self) -> int | None:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int | None) -> None:
        if value is not None:
            _check_int("data.max_length", value, minimum=1, also="or null for the model's context length")
        self._max_length = value


class InstructDataModule(MaxLength, ResumableDataModule):
    """Instruction records split into train/val/test and served as padded, masked batches.

    Arguments are the ``data`` config node (``conf/data/instruct.yaml``). ``max_length``
    None means "the model's context length": the caller sets ``dm.max_length`` before
    training; if it stays None nothing is cut. After :meth:`setup`, ``train_records``,
    ``val_records`` and ``test_records`` hold the raw records of each split and
    ``num_truncated`` how many records (all splits) are longer than ``max_length``.
    """

    def __init__(self, path: str | None = None, batch_size: int = 8, max_length: int | None = None,
                 mask_prompt: bool = True, train_fraction: float = 0.85, val_fraction: float = 0.10,
                 test_fraction: float = 0.05, seed: int = 123, num_workers: int = 0,
                 template: Mapping | PromptTemplate | None = None) -> None:
        super().__init__()
        _check_int("data.batch_size", batch_size, minimum=1)
        _check_int("data.num_workers", num_workers, minimum=0)
        _check_int("data.seed", seed, minimum=None)
        if not isinstance(mask_prompt, bool):
            raise bad_value("data.mask_prompt", mask_prompt, "true or false")
        check_fractions(train_fraction, val_fraction, test_fraction)
        self.path = path
        self.batch_size = batch_size
        self.max_length = max_length
        self.mask_prompt = mask_prompt
        self.fractions = (train_fraction, val_fraction, test_fraction)
        self.seed = seed
        self.num_workers = num_workers
        self.template = template_from_config(template)
        self.train_records: list[dict] = []
        self.val_records: list[dict] = []
        self.test_records: list[dict] = []
        self._examples: dict[str, list[Example]] = {}

    @property
    def num_truncated(self) -> int:
        """Records (all splits) longer than ``max_length`` that batches cut short."""
        return sum(count_truncated(examples, self.max_length) for examples in self._examples.values())

    @property
    def collator(self) -> InstructCollator:
        return InstructCollator(max_length=self.max_length, mask_prompt=self.mask_prompt)

    def prepare_data(self) -> None:
        """Download the public set once (rank 0) when no path is given."""
        fetch_dataset(DATASET_NAME, self.path)

    def setup(self, stage: str | None = None) -> None:
        """Load, split and tokenize once; later calls (other stages) reuse the result."""
        if self._examples:
            return
        records = load_records(fetch_dataset(DATASET_NAME, self.path))
        splits = split_records(records, *self.fractions, seed=self.seed)
        self.train_records, self.val_records, self.test_records = splits
        self._examples = {name: tokenize_records(part, self.template) for name, part in zip(SPLITS, splits)}
        if self.num_truncated:
            _log_truncation(self.num_truncated, len(records), self.max_length)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """Batches of one split; each rank reads its own share (see ``ResumableSampler``)."""
        if split not in self._examples:
            raise RuntimeError(f"InstructDataModule.setup() must run before the {split} dataloader is built")
        examples = self._examples[split]
        train = split == "train"
        return DataLoader(
            examples if train else EvalPadding(examples, _ignored),
            batch_size=self.batch_size,
            sampler=self.make_sampler(len(examples), train=train, seed=self.seed, shuffle=shuffle),
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


def _ignored(example: Example) -> Example:
    return replace(example, ignored=True)


def _check_int(key: str, value: Any, minimum: int | None, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise bad_value(key, value, f"{expected} {also}".strip())


@rank_zero_only
def _log_truncation(truncated: int, total: int, max_length: int | None) -> None:
    log.warning("%d of %d instruction records are longer than data.max_length=%s input tokens and are cut "
                "(their end-of-text is lost); raise data.max_length up to the model's context length "
                "or shorten those records", truncated, total, max_length)
