"""Preference data for ``finetune.py task=dpo``: a prompt, a chosen and a rejected response.

A record is ``{"prompt", "chosen", "rejected"}`` (the prompt used as it is) or, as in the
appendix of "LLMs from scratch", ``{"instruction", "input" (optional), "chosen", "rejected"}``
with the prompt built by the instruction template (``data.template``, as instruction tuning).
Files are a JSON list or JSON Lines (``.jsonl``), read like the instruction records.

A batch holds the chosen sequences of its pairs, then the rejected ones (2 B rows), padded
and masked by :class:`~gpt_lightning.data.instruct.InstructCollator` with the prompt masked:
the targets are the response tokens (and their ``<|endoftext|>``) only, so a sequence's
log-probability is the sum over its response.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from gpt_lightning.data.instruct import Example, InstructCollator, MaxLength, _check_int, _json_type, read_located
from gpt_lightning.data.sampler import EvalPadding, ResumableDataModule
from gpt_lightning.data.template import PromptTemplate, template_from_config
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.tokenizer import EOT_ID, get_tokenizer

log = logging.getLogger(__name__)
RECORD_HELP = ('an object with string keys "chosen", "rejected" and either "prompt" or "instruction" '
               '(and optionally "input")')


def load_preferences(path: str | Path) -> list[dict[str, str]]:
    """Preference records of a JSON list or JSON Lines file; each problem is one line."""
    path = Path(path)
    located = read_located(path, "file of preference records", empty=f"preference records, each {RECORD_HELP}")
    return [_check(path, where, record) for where, record in located]


def _check(path: Path, where: str, record: Any) -> dict[str, str]:
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: {where} is a JSON {_json_type(record)}, expected {RECORD_HELP}")
    needed = ["chosen", "rejected", "prompt" if "prompt" in record else "instruction"]
    for key in needed + (["input"] if "input" in record else []):
        if key not in record:
            raise ConfigError(f"{path}: {where} has no {key!r} key (keys: {sorted(record)}); each record must be "
                              f"{RECORD_HELP}")
        if not isinstance(record[key], str):
            raise ConfigError(f"{path}: {where}: {key!r} is a JSON {_json_type(record[key])}, expected a string")
    return record


def prompt_of(record: Mapping[str, str], template: PromptTemplate) -> str:
    if "prompt" in record:
        return record["prompt"]
    return template.format_prompt(record["instruction"], record.get("input", ""))


@dataclass(frozen=True)
class Pair:
    chosen: Example
    rejected: Example
    ignored: bool = False  # a rank's zero-weight padding (EvalPadding)


def tokenize_pairs(records: Sequence[Mapping[str, str]], template: PromptTemplate) -> list[Pair]:
    tok = get_tokenizer()
    prompts = tok.encode_batch([prompt_of(r, template) for r in records])
    chosen = tok.encode_batch([r["chosen"] for r in records])
    rejected = tok.encode_batch([r["rejected"] for r in records])
    return [Pair(Example(p, c + [EOT_ID]), Example(p, r + [EOT_ID])) for p, c, r in zip(prompts, chosen, rejected)]


@dataclass(frozen=True)
class PreferenceCollator:
    """``input_ids`` and ``targets`` (2 B rows: the chosen sequences, then the rejected), prompt masked."""

    max_length: int | None = None

    def __call__(self, batch: Sequence[Pair]) -> dict[str, torch.Tensor]:
        collate = InstructCollator(max_length=self.max_length, mask_prompt=True)
        out = collate([p.chosen for p in batch] + [p.rejected for p in batch])
        ignored = torch.tensor([p.ignored for p in batch] * 2)
        out["targets"][ignored] = -100
        return out


class PreferenceDataModule(MaxLength, ResumableDataModule):
    """Preference records split into train and validation (conf/data/preference.yaml)."""

    def __init__(self, path: str | None = None, batch_size: int = 4, max_length: int | None = None,
                 train_fraction: float = 0.9, val_fraction: float = 0.1, seed: int = 123, num_workers: int = 0,
                 template: Mapping | PromptTemplate | None = None) -> None:
        super().__init__()
        _check_int("data.batch_size", batch_size, minimum=1)
        _check_int("data.num_workers", num_workers, minimum=0)
        if not path:
            raise bad_value("data.path", path, "a JSON or JSON Lines file of preference records "
                            '({"prompt" or "instruction", "chosen", "rejected"})')
        for key, value in (("train_fraction", train_fraction), ("val_fraction", val_fraction)):
            if not 0 < value < 1:
                raise bad_value(f"data.{key}", value, "a fraction in (0, 1)")
        if train_fraction + val_fraction > 1 + 1e-9:
            raise bad_value("data.train_fraction", train_fraction, f"at most 1 - data.val_fraction = {1 - val_fraction:g}")
        self.path, self.batch_size, self.seed, self.num_workers = path, batch_size, seed, num_workers
        self.max_length = max_length
        self.fractions = (train_fraction, val_fraction)
        self.template = template_from_config(template)
        self._pairs: dict[str, list[Pair]] = {}

    @property
    def num_truncated(self) -> int:
        """Sequences (chosen or rejected, all splits) longer than ``max_length`` and cut."""
        if self.max_length is None:
            return 0
        return sum(e.num_tokens > self.max_length + 1 for pairs in self._pairs.values() for p in pairs
                   for e in (p.chosen, p.rejected))

    def setup(self, stage: str | None = None) -> None:
        if self._pairs:
            return
        records = load_preferences(Path(self.path).expanduser())
        order = list(range(len(records)))
        random.Random(self.seed).shuffle(order)
        n_val = int(len(records) * self.fractions[1] + 1e-9)
        n_train = int(len(records) * self.fractions[0] + 1e-9)
        if n_val == 0 or n_train == 0:
            key = "val_fraction" if n_val == 0 else "train_fraction"
            raise bad_value(f"data.{key}", self.fractions[key == "val_fraction"],
                            f"it leaves no record of {len(records)} in that split; use a larger one")
        shuffled = [records[i] for i in order]
        self._pairs = {"val": tokenize_pairs(shuffled[:n_val], self.template),
                       "train": tokenize_pairs(shuffled[n_val:n_val + n_train], self.template)}
        if self.num_truncated:
            log.warning("%d preference responses are longer than data.max_length=%s tokens with their prompt and are "
                        "cut", self.num_truncated, self.max_length)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def _loader(self, split: str) -> DataLoader:
        pairs = self._pairs[split]
        train = split == "train"
        return DataLoader(pairs if train else EvalPadding(pairs, lambda p: Pair(p.chosen, p.rejected, True)),
                          batch_size=self.batch_size, collate_fn=PreferenceCollator(self.max_length),
                          sampler=self.make_sampler(len(pairs), train=train, seed=self.seed),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

