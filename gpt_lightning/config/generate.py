"""Typed schema of generate.py's config (conf/generate.yaml, where every key is described)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from gpt_lightning.config.schemas import InitConfig
from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPTConfig


@dataclass
class DraftConfig:
    """``draft``: speculative decoding's smaller model (conf/generate.yaml)."""

    init: str | None = None  # null = off; a released name or checkpoint
    path: str | None = None  # weights for draft.init=checkpoint
    k: int = 4  # tokens proposed per target forward

    def __post_init__(self) -> None:
        if self.k < 1:
            raise bad_value("draft.k", self.k, "an integer >= 1 (tokens proposed per target forward; 4 is typical)")


@dataclass
class GenerateConfig:
    """The keys of conf/generate.yaml (described there), type-checked by ``config.parse``."""

    model: GPTConfig = field(default_factory=GPTConfig)  # shape for init=scratch
    init: InitConfig = field(default_factory=lambda: InitConfig("openai_124m"))
    prompt: str = "Every effort moves you"
    prompt_file: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 100
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    stop: list[str] | str = field(default_factory=list)
    seed: int = 123
    num_samples: int = 1
    output: str | None = None
    stream: bool = True
    instruct: bool = False
    chat: bool = False
    device: str = "auto"
    dtype: str = "auto"
    quantize: Literal["int8"] | None = None
    draft: DraftConfig = field(default_factory=lambda: DraftConfig())

    def __post_init__(self) -> None:
        for key in ("batch_size", "num_samples"):
            if getattr(self, key) < 1:
                raise bad_value(key, getattr(self, key), "an integer >= 1")
        self.stop = [unescape(s) for s in ([self.stop] if isinstance(self.stop, str) else list(self.stop))]
        if not all(self.stop):
            raise bad_value("stop", self.stop, 'a list of non-empty strings, e.g. stop=\'["\\n\\n"]\'')


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """What a user means by ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` typed on the command line (the shell
    and Hydra keep the backslash): a newline, a tab, a carriage return, one backslash. Any
    other backslash stays as typed."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], text)
