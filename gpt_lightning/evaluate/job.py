"""What `python evaluate.py` does: check the config, load the tasks and the weights, score,
write ``summary.json`` + ``<task>.jsonl`` into the run folder and print the summary table.

Every key is described in conf/evaluate.yaml. The entry script passes the run folder in.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from dataclasses import dataclass, field
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from gpt_lightning.config.schemas import parse
from gpt_lightning.errors import bad_value
from gpt_lightning.generate.loading import pick_device, pick_dtype
from gpt_lightning.weights.sources import InitConfig, build_model, planned_config
from gpt_lightning.model import GPTConfig
from gpt_lightning.evaluate.build import check_count, make_tasks, task_names
from gpt_lightning.evaluate.hellaswag import REFERENCE
from gpt_lightning.evaluate.judge import Judge
from gpt_lightning.evaluate.tasks import SUMMARY_FILE, evaluate, format_table

log = logging.getLogger("gpt_lightning")


@dataclass
class EvaluateConfig:
    """The keys of conf/evaluate.yaml (described there), type-checked by ``config.parse``."""

    model: GPTConfig = field(default_factory=GPTConfig)  # shape for init=scratch
    init: InitConfig = field(default_factory=lambda: InitConfig("openai_124m"))
    judge: dict = field(default_factory=dict)  # the judge group (task=judge)
    task: str = "hellaswag"
    tasks: list[str] | None = None
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 123
    progress: bool = True
    output_dir: str | None = None
    text: dict = field(default_factory=dict)
    hellaswag: dict = field(default_factory=dict)
    lambada: dict = field(default_factory=dict)
    classification: dict = field(default_factory=dict)  # task=classification (evaluate/classification.py)


def chosen_tasks(cfg: DictConfig) -> list[str]:
    """``tasks`` when set, else ``task``."""
    if cfg.tasks is not None:
        return task_names(cfg.tasks, "tasks")
    return task_names(cfg.task, "task")


def check(cfg: DictConfig) -> None:
    check_count("limit", cfg.limit)
    check_count("batch_size", cfg.batch_size, allow_none=False)
    if not isinstance(cfg.progress, bool):
        raise bad_value("progress", cfg.progress, "true or false")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise bad_value("seed", cfg.seed, "an integer")


def reference_notes(cfg: DictConfig, summary: list[dict]) -> dict:
    """Published scores of the released weights to print beside ours."""
    notes = {}
    if cfg.init.name in REFERENCE:
        who, metric, correct, total = REFERENCE[cfg.init.name]
        notes[("hellaswag", metric)] = f"{who}: {correct / total:.4f} ({correct:,}/{total:,})"
    return notes if any((r["task"], r["metric"]) in notes for r in summary) else {}


def run(values: dict, output_dir: str | Path, explicit: Iterable[str] = ()) -> list[dict]:
    """evaluate.py: ``values`` is the composed conf/evaluate.yaml as plain dicts."""
    typed = parse(EvaluateConfig, values, "")  # every key's type, before anything is read
    cfg = OmegaConf.create(values)
    names = chosen_tasks(cfg)
    check(cfg)
    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    if "classification" in names:  # a classifier export, not a language model
        from gpt_lightning.evaluate import classification

        return classification.run(typed, cfg, names, device, dtype, output_dir)
    needs_model = any(n != "judge" for n in names)  # the judge scores text; it needs no weights of ours
    context = planned_config(typed.init, typed.model, explicit).context_length if needs_model else None
    tasks = make_tasks(names, cfg, context_length=context, limit=cfg.limit)  # data before weights
    model = None
    if needs_model:
        import torch

        model = build_model(typed.init, typed.model, explicit, seed=typed.seed)  # seeds init=scratch's weights
        model = model.to(device=device, dtype=dtype).eval()
    summary = evaluate(model, tasks, batch_size=cfg.batch_size, progress=cfg.progress, output_dir=output_dir)
    print(format_table(summary, reference_notes(cfg, summary)), flush=True)
    for task in tasks:
        if isinstance(task, Judge):
            dist = Judge.distribution(task.last_totals)
            print("judge scores: " + ", ".join(f"{b}: {c}" for b, c in dist.items()), flush=True)
    print(f"wrote {Path(output_dir) / SUMMARY_FILE} and {', '.join(t.name + '.jsonl' for t in tasks)}",
          file=sys.stderr, flush=True)
    return summary

