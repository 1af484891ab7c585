"""Typed schema of evaluate.py's config (conf/evaluate.yaml, where every key is described)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gpt_lightning.config.schemas import InitConfig
from gpt_lightning.config.tasks import (ClassificationTaskConfig, HellaSwagConfig, JudgeConfig, LambadaConfig, TextTaskConfig, check_sections,
                                        task_names)
from gpt_lightning.model import GPTConfig


@dataclass
class EvaluateConfig:
    """The keys of conf/evaluate.yaml, type-checked by ``config.schemas.parse``."""

    model: GPTConfig = field(default_factory=GPTConfig)  # shape for init=scratch
    init: InitConfig = field(default_factory=lambda: InitConfig("openai_124m"))
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # the judge group (task=judge)
    task: str = "hellaswag"
    tasks: list[str] | None = None
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    quantize: Literal["int8"] | None = None  # int8 weights per output channel (CPUs, float32)
    seed: int = 123
    progress: bool = True
    output_dir: str | None = None
    text: TextTaskConfig = field(default_factory=TextTaskConfig)
    hellaswag: HellaSwagConfig = field(default_factory=HellaSwagConfig)
    lambada: LambadaConfig = field(default_factory=LambadaConfig)
    classification: ClassificationTaskConfig = field(default_factory=ClassificationTaskConfig)  # task=classification

    def __post_init__(self) -> None:
        self.chosen_tasks()
        check_sections(self, "")

    def chosen_tasks(self) -> list[str]:
        """``tasks`` when set, else ``task``."""
        return task_names(self.tasks, "tasks") if self.tasks is not None else task_names(self.task, "task")
