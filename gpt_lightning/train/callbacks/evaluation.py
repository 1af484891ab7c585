"""Benchmark scores during training: ``callbacks.eval.tasks=[hellaswag] callbacks.eval.every_n_steps=500``.

Every ``every_n_steps`` optimizer steps and once when training ends, the tasks are scored on
the current weights: each rank scores its share of the items (rank r: items r, r + world, ...)
and the sums are reduced over ranks, so the score equals one process scoring them all.
Logged as ``eval/<task>/<metric>`` (TensorBoard, CSV); the last and the best values go into
result.json as ``eval/<task>/<metric>`` and ``best_eval/<task>/<metric>``, and from there into
the sweep summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning as L
import torch
from omegaconf import OmegaConf

from gpt_lightning.errors import bad_value
from gpt_lightning.evaluate.build import check_count, make_tasks, task_names
from gpt_lightning.evaluate.tasks import evaluate

log = logging.getLogger("gpt_lightning")
KEY = "callbacks.eval"
TRAINING_TASKS = ("perplexity", "hellaswag", "lambada")  # the judge needs responses, see finetune.py
LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_byte")


class EvalCallback(L.Callback):
    def __init__(self, tasks: list[str], *, every_n_steps: int | None, limit: int | None, batch_size: int,
                 settings: Mapping) -> None:
        self.names, self.every_n_steps, self.limit, self.batch_size = list(tasks), every_n_steps, limit, batch_size
        self.settings = dict(settings or {})
        self.tasks = None
        self.final: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.last_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.tasks is None:
            self.tasks = make_tasks(self.names, self.settings, context_length=pl_module.model.config.context_length,
                                    limit=self.limit, prefix=f"{KEY}.")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0 and step != self.last_step:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self.last_step:
            self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module) -> dict[str, float]:
        """Score every task now (all ranks take part); log and remember the values."""
        step = trainer.global_step
        self.last_step = step

        def reduce(totals: dict[str, float]) -> dict[str, float]:
            keys = sorted(totals)
            t = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64, device=trainer.strategy.root_device)
            t = trainer.strategy.reduce(t, reduce_op="sum")
            return dict(zip(keys, t.cpu().tolist()))

        summary = evaluate(pl_module.model, self.tasks, batch_size=self.batch_size, progress=False,
                           rank=trainer.global_rank, world_size=trainer.world_size, reduce=reduce)
        values = {f"eval/{r['task']}/{r['metric']}": r["value"] for r in summary if r["value"] is not None}
        for key, value in values.items():
            better = min if key.rsplit("/", 1)[1] in LOWER_IS_BETTER else max
            self.best[key] = better(value, self.best.get(key, value))
        self.final = values
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)
            log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        return values

    def results(self) -> dict[str, float]:
        """The last values as ``eval/...`` and the best ones as ``best_eval/...``."""
        return {**self.final, **{f"best_{k}": v for k, v in self.best.items()}}

    def state_dict(self) -> dict:
        return {"best": self.best, "final": self.final, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.final, self.last_step = dict(state["best"]), dict(state["final"]), state["last_step"]


def eval_callbacks(settings: Mapping | None, strategy: str = "auto") -> list[EvalCallback]:
    """The callback ``callbacks.eval`` asks for (none when ``callbacks.eval.tasks`` is empty);
    ``strategy`` is the strategy's name (the callback cannot score FSDP shards)."""
    c = OmegaConf.create(dict(settings)) if settings else None
    if c is None or not c.get("tasks"):
        return []
    names = task_names(c.tasks, f"{KEY}.tasks", allowed=TRAINING_TASKS)
    check_count(f"{KEY}.every_n_steps", c.every_n_steps)
    check_count(f"{KEY}.limit", c.get("limit"))
    check_count(f"{KEY}.batch_size", c.batch_size, allow_none=False)
    if strategy == "fsdp":
        raise bad_value(f"{KEY}.tasks", names, "not with strategy=fsdp (its ranks hold shards of the weights); "
                        "evaluate the export with evaluate.py instead")
    settings = OmegaConf.to_container(c, resolve=True)
    return [EvalCallback(names, every_n_steps=c.every_n_steps, limit=c.limit, batch_size=c.batch_size,
                         settings=settings)]


def eval_results(trainer: L.Trainer) -> dict[str, float]:
    """What the run's EvalCallback measured, for result.json (empty without one)."""
    for cb in trainer.callbacks:
        if isinstance(cb, EvalCallback):
            return cb.results()
    return {}
