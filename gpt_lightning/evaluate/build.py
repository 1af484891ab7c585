"""Task names and their typed settings (evaluate.py's EvaluateConfig, or training's
``callbacks.eval`` EvalConfig) -> ready Task objects."""

from __future__ import annotations

from collections.abc import Sequence

from gpt_lightning.config.tasks import TASKS, check_count
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.evaluate.tasks import Task


def make_tasks(names: Sequence[str], settings, *, context_length: int | None, limit: int | None = None,
               prefix: str = "") -> list[Task]:
    """Load (download if needed) and tokenize each task's items, the first ``limit`` of each.

    ``settings`` holds the ``text``, ``hellaswag``, ``lambada`` (and for the judge, ``judge``)
    sections (config/evaluate.py's EvaluateConfig or config/tasks.py's EvalConfig); ``prefix``
    is where they live in the config, for error messages.
    """
    check_count(f"{prefix}limit", limit)
    tasks: list[Task] = []
    for name in names:
        try:
            tasks.append(_make(name, settings, context_length, limit))
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}" if prefix and str(err).startswith(("text.", "hellaswag.", "lambada."))
                              else str(err)) from None
    return tasks


def _make(name: str, settings, context_length: int, limit: int | None) -> Task:
    if name == "perplexity":
        from gpt_lightning.evaluate.perplexity import Perplexity, text_files

        text = settings.text
        task = Perplexity(text_files(text.path, text.data), context_length, text.stride)
        task.items = task.items[:limit] if limit else task.items
        return task
    if name == "hellaswag":
        from gpt_lightning.evaluate.hellaswag import HellaSwag, load_records

        return HellaSwag(load_records(settings.hellaswag.path, limit), method=settings.hellaswag.method)
    if name == "lambada":
        from gpt_lightning.evaluate.lambada import Lambada, load_records

        return Lambada(load_records(settings.lambada.path, limit))
    if name == "judge":
        from gpt_lightning.evaluate.judge import Judge, load_responses

        task = Judge(load_responses(settings.judge.responses, limit), settings.judge)
        task.check_reachable()
        return task
    raise bad_value("task", name, f"one of {', '.join(TASKS)}")
