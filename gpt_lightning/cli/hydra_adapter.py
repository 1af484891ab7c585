"""The one place that knows Hydra: entry points hand their composed config over here.

The commands (``python train.py`` in a checkout, ``gpt-train`` once installed, and the other
jobs alike) are built here by :func:`command`: Hydra's ``main`` on the job's primary config in
:data:`CONF_DIR`. ``run(cfg, job)`` turns the composed config into plain Python (interpolations resolved,
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

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
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


def _conf_dir() -> Path:
    """The configs: ``gpt_lightning/conf`` in an installed wheel, ``conf/`` beside the package in a
    checkout (or an editable install of one)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return folder
    raise ConfigError(f"the configs (train.yaml ...) are in neither {package / 'conf'} nor {package.parent / 'conf'}; "
                      "reinstall the package")


CONF_DIR = _conf_dir()


def command(name: str, job: Callable[[dict, object], object]) -> Callable[[], object]:
    """The command-line entry point of one job: ``conf/<name>.yaml`` composed with the command
    line's overrides (``--config-dir`` adds a folder of your own configs), then ``run(cfg, job)``."""

    def main(cfg: DictConfig):
        return run(cfg, job)

    # Hydra names the job after the task function's module: train.log, `python train.py ...` in reports.
    main.__module__ = name
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=name)(main)
def _run_folder(name, default: str) -> str:
    from gpt_lightning.train.cluster import folder_name

    return folder_name(name, default)


# conf/base.yaml: the run folder is named by run.name, else the job's id (srun, torchrun), else the date
OmegaConf.register_new_resolver("run_folder", _run_folder, replace=True)


def run(cfg: DictConfig, job: Callable[[dict, object], object]) -> object:
    """Run ``job(values, ctx)`` for a Hydra entry point (see the module docstring)."""
    return main_guard(lambda: job(plain(cfg), context()), on_error=_record_failed_job)


def train_job(values: dict, ctx) -> dict:
    """train.py and finetune.py: check every key, then train."""
    from gpt_lightning.config.legacy import current_targets
    from gpt_lightning.config.schemas import train_spec
    from gpt_lightning.train.job import train

    values = current_targets(values)  # a config.yaml of an earlier version names old module paths
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


train = command("train", train_job)
finetune = command("finetune", train_job)
generate = command("generate", generate_job)
serve = command("serve", serve_job)
evaluate = command("evaluate", evaluate_job)


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
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    head = [program] if program.startswith("gpt-") else ["python", f"{hc.job.name}.py"]  # an installed command
    return shlex.join([*head, *_config_options(), *hc.overrides.task])


def _config_options() -> list[str]:
    """``--config-dir`` / ``--config-name`` as given on the command line (a user's own configs)."""
    hc = HydraConfig.get()
    options = [f"--config-dir={source.path}" for source in hc.runtime.config_sources
               if source.provider == "command-line" and source.schema == "file"]
    return options + ([f"--config-name={hc.job.config_name}"] if hc.job.config_name != hc.job.name else [])


ENTRY_ENV = "GPT_LIGHTNING_ENTRY"  # the entry point a job was started from, for its DDP ranks


def _entry() -> list[str]:
    """How this process was started (``script.py`` or ``-m module``), as the DDP relaunch needs it.

    A Hydra launcher that runs jobs elsewhere (submitit: ``python -m submitit.core._submit``)
    passes the environment on, so the entry the user typed is recorded there first."""
    import __main__

    if os.environ.get(ENTRY_ENV):
        return json.loads(os.environ[ENTRY_ENV])
    spec = getattr(__main__, "__spec__", None)
    if spec is None:
        path = getattr(__main__, "__file__", None) or sys.argv[0]
        return [os.path.abspath(path)] if path else []
    return ["-m", spec.name]


class RememberEntry(Callback):
    """Hydra callback (conf/base.yaml): before a sweep's jobs start, the launching process records
    its entry point in the environment, which launchers such as submitit pass on to the jobs."""

    def on_multirun_start(self, config, **kwargs) -> None:
        entry = _entry()
        if entry and not (entry[0] == "-m" and entry[1].startswith("submitit.")):
            os.environ[ENTRY_ENV] = json.dumps(entry)


def job_command(local_rank: int) -> tuple[list[str], str]:
    """(argv, cwd) that re-runs the current Hydra job, and only it, for ``local_rank``."""
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, *_entry()]
    command.append(f"--config-name={hc.job.config_name}")
    command += [option for option in _config_options() if option.startswith("--config-dir")]  # the parent's
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


class SweepSummary(Callback):
    """Hydra callback (conf/base.yaml): ``summary.md`` and ``summary.csv`` in the sweep folder
    when a multirun ends (runs/sweep.py writes them).

    A sweep folder holds one sweep: a second sweep into a folder with job folders stops at
    once (exit code 2), since its jobs would land in the first sweep's folders. When any job
    failed, the sweep exits with code 1 after the summary (``fail_on_error: false``, i.e.
    ``hydra.callbacks.sweep_summary.fail_on_error=false``, exits 0), so scripts and CI notice.
    """

    def __init__(self, fail_on_error: bool = True) -> None:
        self.fail_on_error = fail_on_error

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if sweep_dir.is_dir() else []
        if jobs:
            print(f"error: hydra.sweep.dir={str(sweep_dir)!r} is invalid: it holds the job folders of another "
                  f"sweep ({', '.join(jobs[:3])}); choose a new hydra.sweep.dir (sweeps never share a folder)",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from gpt_lightning.runs.sweep import failed, summarize, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        print(f"\nSweep summary ({sweep_dir / 'summary.md'}):\n" + write_summary(sweep_dir))
        rows = summarize(sweep_dir)
        bad = failed(rows)
        if bad and self.fail_on_error:
            print(f"error: {len(bad)} of {len(rows)} jobs failed ({', '.join(r['job'] for r in bad[:3])}); see "
                  f"{sweep_dir / 'summary.md'} (hydra.callbacks.sweep_summary.fail_on_error=false exits 0)",
                  file=sys.stderr, flush=True)
            raise SystemExit(1)


def prepare_job(values: dict, ctx) -> dict:
    """``python prepare.py``: prepare the data config's corpus, print where it is."""
    from gpt_lightning.config.schemas import build
    from gpt_lightning.data.shards import summary

    data = build(values.get("data") or {}, "data")
    if not hasattr(data, "_prepared"):
        raise bad_value("data", (values.get("data") or {}).get("_target_"),
                        "a corpus config such as data=corpus (data=text and the public corpora prepare on first use)")
    folder, manifest = data._prepared()
    print(summary(folder, manifest), flush=True)
    return manifest


def prepare_main(argv: list[str] | None = None) -> None:
    """The Hydra entry point of ``python prepare.py`` (conf/prepare.yaml)."""
    import hydra

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
    def main(cfg: DictConfig):
        return run(cfg, prepare_job)

    main()
