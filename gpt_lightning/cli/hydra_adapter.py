"""The one place that knows Hydra: entry points hand their composed config over here.

``run(cfg, job)`` turns the composed config into plain Python (interpolations resolved,
``???`` reported as a missing key), gathers what only Hydra knows (the run folder, the
command-line overrides, the model keys the user set, how to re-launch this job for another
DDP rank) into a :class:`~gpt_lightning.train.job.RunContext`, and calls ``job(values, ctx)``
under :func:`~gpt_lightning.errors.main_guard`. The library never imports this module.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from gpt_lightning.errors import ConfigError, bad_value, main_guard

# conf/evaluate.yaml: the run folder is output_dir when given, else a dated one
OmegaConf.register_new_resolver("or_else", lambda value, default: default if value is None else value, replace=True)
# conf/base.yaml: sweep job folders named from their overrides, flat and safe for any value
OmegaConf.register_new_resolver("job_folder", lambda overrides: _job_folder(overrides), replace=True)


def _job_folder(overrides: str) -> str:
    from gpt_lightning.runs.sweep import job_folder_name

    return job_folder_name(overrides)


def run(cfg: DictConfig, job: Callable[[dict, object], object]) -> object:
    """Run ``job(values, ctx)`` for a Hydra entry point (see the module docstring)."""
    return main_guard(lambda: job(plain(cfg), context()), on_error=_record_failed_job)


def train_job(values: dict, ctx) -> dict:
    """train.py and finetune.py: check every key, then train."""
    from gpt_lightning.config.schemas import train_spec
    from gpt_lightning.train.job import train

    spec = train_spec(values)  # every key checked before anything heavy starts
    ctx.config = values
    return train(spec, ctx)


def generate_job(values: dict, ctx) -> None:
    """generate.py."""
    from gpt_lightning.generate.job import run as generate

    generate(values, ctx.explicit_model_keys)


def serve_job(values: dict, ctx) -> None:
    """serve.py."""
    from gpt_lightning.serve.job import run as serve

    serve(values, ctx.explicit_model_keys)


def evaluate_job(values: dict, ctx) -> None:
    """evaluate.py: the run folder is ``output_dir`` when given (see conf/evaluate.yaml)."""
    from gpt_lightning.evaluate.job import run as evaluate

    evaluate(values, ctx.out_dir, ctx.explicit_model_keys)


def plain(cfg: DictConfig) -> dict:
    """The composed config as plain dicts and lists; a missing or broken value is one line."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = err.full_key or "?"
        raise bad_value(key, "???", f"required: set it on the command line ({key}=...)") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{err.full_key or 'config'} is invalid: {' '.join(str(err).split())[:300]}") from None


def overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def explicit_model_keys(task_overrides: list[str] | None = None) -> set[str]:
    """Model keys set on the command line; ``model=<size>`` counts as setting every
    architecture key. These must agree with loaded weights; the others are replaced."""
    from gpt_lightning.weights.sources import ARCH_KEYS

    keys: set[str] = set()
    for override in overrides() if task_overrides is None else task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key == "model":
            keys.update(ARCH_KEYS)
        elif key.startswith("model."):
            keys.add(key.split(".", 1)[1])
    return keys


def context():
    """The RunContext of the current Hydra job."""
    from gpt_lightning.train.job import RunContext

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    task = overrides()
    return RunContext(out_dir=out, overrides=task, explicit_model_keys=explicit_model_keys(task),
                      relaunch=job_command if HydraConfig.initialized() else None, command=command_line())


def command_line() -> str | None:
    """The command that started this job (one job of a sweep: its own overrides), for reports and cards."""
    import shlex

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return shlex.join(["python", f"{hc.job.name}.py", *hc.overrides.task])


def job_command(local_rank: int) -> tuple[list[str], str]:
    """(argv, cwd) that re-runs the current Hydra job, and only it, for ``local_rank``."""
    from hydra.utils import get_original_cwd

    import __main__

    hc = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.join(get_original_cwd(), sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command.append(f"--config-name={hc.job.config_name}")
    for source in hc.runtime.config_sources:  # a --config-dir given to the parent
        if source.provider == "command-line" and source.schema == "file":
            command.append(f"--config-dir={source.path}")
    command += list(hc.overrides.task)
    command += [
        "hydra.mode=RUN",
        f"hydra.run.dir={_quote(hc.runtime.output_dir)}",
        f"hydra.job.name={hc.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    return command, get_original_cwd()


def _quote(value: str) -> str:
    """A Hydra override value in single quotes (sweep folders may hold '=' or ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _record_failed_job(err: ConfigError) -> bool:
    """In a multirun, a job that failed on a bad value writes its error into result.json
    (so the sweep summary lists it) and the sweep goes on; elsewhere the process exits."""
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return False
    from gpt_lightning.runs.files import RESULT_FILE

    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps({"overrides": overrides(), "status": f"failed: {err}"}, indent=2))
    return True
