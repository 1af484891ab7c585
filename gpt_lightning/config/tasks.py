"""Typed schemas of the benchmark settings: the task sections (``text``, ``hellaswag``,
``lambada``), the ``judge`` group and ``callbacks.eval`` (scores during training).

evaluate.py (config/evaluate.py) and training's ``callbacks.eval`` share the task sections;
evaluate/build.py turns them into Task objects. Types are checked by ``config.schemas.parse``,
ranges here; a nested section's range checks name the key from the section that holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from gpt_lightning.errors import bad_value

TASKS = ("perplexity", "hellaswag", "lambada", "judge", "classification")
TRAINING_TASKS = ("perplexity", "hellaswag", "lambada")  # the judge needs responses, see finetune.py
JUDGE_FIELDS = ("instruction", "input", "output", "response")  # what a judge prompt may name


def check_count(key: str, value, allow_none: bool = True) -> None:
    """``value`` is an integer >= 1 (or null where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value(key, value, "an integer >= 1" + (" or null" if allow_none else ""))


def task_names(value, key: str = "tasks", allowed=TASKS) -> list[str]:
    """A task name or a list of them, checked: known, no repeats, at least one."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise bad_value(key, value, f"a task or a list of tasks, e.g. {key}=[{','.join(allowed[1:3])}]")
    for name in names:
        if name not in allowed:
            raise bad_value(key, value, f"tasks are {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise bad_value(key, value, "each task at most once")
    return list(names)


@dataclass
class TextTaskConfig:
    """``text``: perplexity on held-out text."""

    path: str | None = None  # a UTF-8 text file, a folder of them or a glob
    data: str | None = None  # or a public corpus: verdict | shakespeare
    stride: int | None = None  # tokens between window ends; None = the model's context length


@dataclass
class HellaSwagConfig:
    """``hellaswag``: a local file in the public format; None = the public validation set."""

    path: str | None = None
    method: Literal["nanogpt", "lm_eval"] = "nanogpt"  # whose published numbers the scores compare with (evaluate/hellaswag.py)


@dataclass
class LambadaConfig:
    """``lambada``: a local file in OpenAI's format; None = OpenAI's test set."""

    path: str | None = None


@dataclass
class JudgeConfig:
    """``judge``: a judge model behind an OpenAI-compatible endpoint (conf/judge/default.yaml)."""

    enabled: bool = False  # finetune.py: judge the test-split responses at the end
    responses: str | None = None  # evaluate.py task=judge: the responses.jsonl to score
    base_url: str = "http://localhost:11434/v1"
    model: str = "llama3.1"
    api_key_env: str | None = None
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_tokens: int = 16
    temperature: float = 0.0
    prompt: str = ("Given the instruction `{instruction}`, the input `{input}` and the correct output `{output}`, "
                   "score the model response `{response}` on a scale from 0 to 100, where 100 is the best score. "
                   "Respond with the integer number only.")

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/\s]+", self.base_url):
            raise bad_value("judge.base_url", self.base_url, "an http(s) URL, e.g. http://localhost:11434/v1")
        if not self.model:
            raise bad_value("judge.model", self.model, "the judge model's name on that server, e.g. llama3.1")
        if not self.timeout > 0:
            raise bad_value("judge.timeout", self.timeout, "a number of seconds > 0")
        if self.backoff < 0:
            raise bad_value("judge.backoff", self.backoff, "a number of seconds >= 0")
        if self.retries < 0:
            raise bad_value("judge.retries", self.retries, "an integer >= 0")
        if self.max_tokens < 1:
            raise bad_value("judge.max_tokens", self.max_tokens, "an integer >= 1")
        if self.temperature < 0:
            raise bad_value("judge.temperature", self.temperature, "a number >= 0")
        if self.api_key_env is not None and not self.api_key_env:
            raise bad_value("judge.api_key_env", self.api_key_env, "the name of an environment variable, or null")
        try:
            self.prompt.format(**{f: "x" for f in JUDGE_FIELDS})
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            raise bad_value("judge.prompt", self.prompt,
                            f"a text with the fields {{{'}, {'.join(JUDGE_FIELDS)}}} only ({err})") from None


@dataclass
class ClassificationTaskConfig:
    """``classification``: evaluate.py task=classification, a labelled file scored by a classifier export."""

    path: str | None = None  # the labelled file (.csv, .tsv or .jsonl)
    text_column: str = "text"
    label_column: str = "label"
    columns: list[str] | None = None  # names for a file without a header row
    max_length: int | None = None  # most tokens per text; None = the model's context length


def check_sections(owner, prefix: str) -> None:
    """Range checks of the task sections of ``owner`` (EvaluateConfig or EvalConfig)."""
    check_count(f"{prefix}limit", owner.limit)
    check_count(f"{prefix}batch_size", owner.batch_size, allow_none=False)
    check_count(f"{prefix}text.stride", owner.text.stride)


@dataclass
class EvalConfig:
    """``callbacks.eval``: benchmark scores during training (conf/callbacks/default.yaml)."""

    tasks: list[str] = field(default_factory=list)  # [] = off
    every_n_steps: int | None = None  # also score every N optimizer steps; None = only at the end
    limit: int | None = None  # the first N items of each task; None = all
    batch_size: int = 16
    text: TextTaskConfig = field(default_factory=TextTaskConfig)
    hellaswag: HellaSwagConfig = field(default_factory=HellaSwagConfig)
    lambada: LambadaConfig = field(default_factory=LambadaConfig)

    def __post_init__(self) -> None:
        if self.tasks:
            self.tasks = task_names(self.tasks, "callbacks.eval.tasks", allowed=TRAINING_TASKS)
        check_count("callbacks.eval.every_n_steps", self.every_n_steps)
        check_sections(self, "callbacks.eval.")
