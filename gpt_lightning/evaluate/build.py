"""Task names and settings (evaluate.py's config, or callbacks.eval) -> ready Task objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omegaconf import OmegaConf

from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.evaluate.tasks import Task

TASKS = ("perplexity", "hellaswag", "lambada", "judge")


def task_names(value, key: str = "tasks", allowed: Sequence[str] = TASKS) -> list[str]:
    """A task name or a list of them, checked: known, no repeats, at least one."""
    if OmegaConf.is_list(value):
        value = OmegaConf.to_container(value)
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad_value(key, value, f"a task or a list of tasks, e.g. {key}=[{','.join(allowed[1:3])}]")
    for name in names:
        if name not in allowed:
            raise bad_value(key, value, f"tasks are {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise bad_value(key, value, "each task at most once")
    return names


def check_count(key: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_value(key, value, "an integer >= 1" + (" or null" if allow_none else ""))


def make_tasks(names: Sequence[str], settings: Mapping, *, context_length: int | None, limit: int | None = None,
               prefix: str = "") -> list[Task]:
    """Load (download if needed) and tokenize each task's items, the first ``limit`` of each.

    ``settings`` holds the ``text``, ``hellaswag``, ``lambada`` (and for the judge, ``judge``)
    sections; ``prefix`` is where they live in the config, for error messages.
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


def _make(name: str, settings: Mapping, context_length: int, limit: int | None) -> Task:
    if name == "perplexity":
        from gpt_lightning.evaluate.perplexity import Perplexity, text_files

        text = settings["text"]
        check_count("text.stride", text.get("stride"))
        task = Perplexity(text_files(text.get("path"), text.get("data")), context_length, text.get("stride"))
        task.items = task.items[:limit] if limit else task.items
        return task
    if name == "hellaswag":
        from gpt_lightning.evaluate.hellaswag import HellaSwag, load_records

        section = settings["hellaswag"]
        return HellaSwag(load_records(section.get("path"), limit), method=section.get("method") or "nanogpt")
    if name == "lambada":
        from gpt_lightning.evaluate.lambada import Lambada, load_records

        return Lambada(load_records(settings["lambada"].get("path"), limit))
    if name == "judge":
        from gpt_lightning.evaluate.judge import Judge, JudgeSettings, load_responses

        judge = settings["judge"]
        task = Judge(load_responses(judge.get("responses"), limit), JudgeSettings.from_config(judge))
        task.check_reachable()
        return task
    raise bad_value("task", name, f"one of {', '.join(TASKS)}")
