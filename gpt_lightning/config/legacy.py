"""Old names of modules and classes, so runs written by earlier versions keep working.

Until version 0.1.0's layout by capability, the package was flat: ``gpt_lightning.config``
held the schemas, ``gpt_lightning.init`` the init group, ``gpt_lightning.loggers`` the
trackers, and so on. A ``config.yaml`` of such a run names them in its ``_target_`` keys, and
a checkpoint may hold pickled objects under their old module paths. :func:`current_path` maps
an old ``module.Name`` to where it lives now; :func:`current_targets` rewrites every
``_target_`` of a config; :func:`load_checkpoint` reads a ``.ckpt`` with old module paths
mapped. ``config.schemas.locate`` (every ``_target_`` the configs name) goes through here.
"""

from __future__ import annotations

import importlib.util
import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TARGET = "_target_"

# Classes whose module moved and whose old module now is (or holds) something else.
MOVED_NAMES = {
    "gpt_lightning.init.InitConfig": "gpt_lightning.config.schemas.InitConfig",
    "gpt_lightning.weights.sources.InitConfig": "gpt_lightning.config.schemas.InitConfig",
    "gpt_lightning.generate_app.GenerateConfig": "gpt_lightning.config.generate.GenerateConfig",
    "gpt_lightning.generate_app.DraftConfig": "gpt_lightning.config.generate.DraftConfig",
    "gpt_lightning.generate.job.GenerateConfig": "gpt_lightning.config.generate.GenerateConfig",
    "gpt_lightning.generate.job.DraftConfig": "gpt_lightning.config.generate.DraftConfig",
    "gpt_lightning.serving.launch.ServeConfig": "gpt_lightning.config.serve.ServeConfig",
    "gpt_lightning.serve.job.ServeConfig": "gpt_lightning.config.serve.ServeConfig",
    "gpt_lightning.evaluation.app.EvaluateConfig": "gpt_lightning.config.evaluate.EvaluateConfig",
    "gpt_lightning.evaluate.job.EvaluateConfig": "gpt_lightning.config.evaluate.EvaluateConfig",
    "gpt_lightning.sweep.SweepSummary": "gpt_lightning.cli.hydra_adapter.SweepSummary",
    "gpt_lightning.runs.sweep.SweepSummary": "gpt_lightning.cli.hydra_adapter.SweepSummary",
    "gpt_lightning.model_card.RunRecord": "gpt_lightning.train.callbacks.run_record.RunRecord",
    "gpt_lightning.weights.model_card.RunRecord": "gpt_lightning.train.callbacks.run_record.RunRecord",
}

# Whole modules that moved (the longest matching prefix wins).
MOVED_MODULES = {
    "gpt_lightning.config": "gpt_lightning.config.schemas",
    "gpt_lightning.init": "gpt_lightning.weights.sources",
    "gpt_lightning.loggers": "gpt_lightning.train.trackers",
    "gpt_lightning.hydra_app": "gpt_lightning.cli.hydra_adapter",
    "gpt_lightning.pipeline": "gpt_lightning.train.job",
    "gpt_lightning.lit_module": "gpt_lightning.train.module",
    "gpt_lightning.callbacks": "gpt_lightning.train.callbacks",
    "gpt_lightning.responses": "gpt_lightning.train.callbacks.responses",
    "gpt_lightning.checkpoint_io": "gpt_lightning.train.checkpoint_io",
    "gpt_lightning.distributed": "gpt_lightning.train.distributed",
    "gpt_lightning.preemption": "gpt_lightning.train.preemption",
    "gpt_lightning.resume": "gpt_lightning.train.resume",
    "gpt_lightning.run_folder": "gpt_lightning.train.run_folder",
    "gpt_lightning.schedule": "gpt_lightning.train.schedule",
    "gpt_lightning.export": "gpt_lightning.weights.export",
    "gpt_lightning.hf_io": "gpt_lightning.weights.hf_io",
    "gpt_lightning.model_card": "gpt_lightning.weights.model_card",
    "gpt_lightning.template": "gpt_lightning.data.template",
    "gpt_lightning.generation": "gpt_lightning.generate.sampling",
    "gpt_lightning.speculative": "gpt_lightning.generate.speculative",
    "gpt_lightning.generate_app": "gpt_lightning.generate.job",
    "gpt_lightning.compare": "gpt_lightning.runs.compare",
    "gpt_lightning.report": "gpt_lightning.runs.report",
    "gpt_lightning.sweep": "gpt_lightning.runs.sweep",
    "gpt_lightning.run_files": "gpt_lightning.runs.files",
    "gpt_lightning.evaluation.app": "gpt_lightning.evaluate.job",
    "gpt_lightning.evaluation.callback": "gpt_lightning.train.callbacks.evaluation",
    "gpt_lightning.evaluation": "gpt_lightning.evaluate",
    "gpt_lightning.serving.launch": "gpt_lightning.serve.job",
    "gpt_lightning.serving.app": "gpt_lightning.serve.routes",
    "gpt_lightning.serving": "gpt_lightning.serve",
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def current_module(module: str) -> str:
    """Where the module ``module`` lives now (itself when it did not move)."""
    if module in MOVED_MODULES:
        return MOVED_MODULES[module]
    if _exists(module):
        return module
    for old in sorted(MOVED_MODULES, key=len, reverse=True):
        if module.startswith(old + "."):
            return MOVED_MODULES[old] + module[len(old):]
    return module


def current_path(path: str) -> str:
    """Where ``module.Name`` lives now; paths that did not move come back as they are."""
    path = str(path)
    if path in MOVED_NAMES:
        return MOVED_NAMES[path]
    module, _, name = path.rpartition(".")
    if not module.startswith("gpt_lightning"):
        return path
    return f"{current_module(module)}.{name}"


def current_targets(values: Any) -> Any:
    """``values`` (a config as plain dicts and lists) with every ``_target_`` at its current path."""
    if isinstance(values, Mapping):
        return {k: current_path(v) if k == TARGET and isinstance(v, str) else current_targets(v)
                for k, v in values.items()}
    if isinstance(values, list):
        return [current_targets(v) for v in values]
    return values


class Unpickler(pickle.Unpickler):
    """Finds classes pickled under an old module path where they live now."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("gpt_lightning"):
            module, _, name = current_path(f"{module}.{name}").rpartition(".")
        return super().find_class(module, name)


# What torch.load takes as ``pickle_module``: pickle, with the Unpickler above.
pickle_module = types.SimpleNamespace(**{k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
pickle_module.Unpickler = Unpickler
pickle_module.load = lambda file, **kw: Unpickler(file, **kw).load()
pickle_module.__name__ = "gpt_lightning.config.legacy.pickle_module"


def load_checkpoint(path: str | Path) -> Any:
    """``torch.load`` of one of our checkpoints (full pickle: they are the user's own files),
    memory-mapped, on the CPU, old module paths mapped."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False, mmap=True, pickle_module=pickle_module)
