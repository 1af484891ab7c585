"""DDP that works under Hydra, single runs and multiruns alike.

Lightning's script launcher starts ranks 1..N-1 by re-running ``sys.argv``. Under a Hydra
multirun that argv holds ``-m`` and the whole sweep, so every child starts a sweep of its
own, and the DDP environment variables that rank 0 set for job 1 (LOCAL_RANK, MASTER_PORT,
WORLD_SIZE, ...) stay in its environment, so job 2 believes an outside launcher made its
processes and waits for ranks that never come (Lightning issue 11300).

Here the children get the command of *this job*: the script, the job's own overrides,
``hydra.mode=RUN`` and ``hydra.run.dir`` set to the job's output folder. After each job
``job_teardown`` waits for the children, destroys the process group and puts the
environment back as it was before the job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """(argv, cwd) that re-runs the current Hydra job, and only it, for ``local_rank``."""
    from hydra.core.hydra_config import HydraConfig
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


class _HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher, but children re-run the current Hydra job only."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return super()._call_children_scripts()
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        for local_rank in range(1, self.num_processes):
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if os.environ.get("PL_GLOBAL_SEED") is None:
                child_env.pop("PL_GLOBAL_SEED", None)
            command, cwd = hydra_job_command(local_rank)
            self.procs.append(subprocess.Popen(command, env=child_env, cwd=cwd))


class _HydraSafeLauncher:
    """Mixin for Lightning strategies that start ranks by re-running the script."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = _HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    @property
    def child_processes(self) -> list[subprocess.Popen]:
        return list(getattr(self._launcher, "procs", []) or [])


class HydraDDPStrategy(_HydraSafeLauncher, DDPStrategy):
    """``DDPStrategy`` whose launcher is safe inside Hydra runs and multiruns."""

    strategy_name = "hydra_ddp"


class HydraFSDPStrategy(_HydraSafeLauncher, FSDPStrategy):
    """``FSDPStrategy`` whose launcher is safe inside Hydra runs and multiruns."""

    strategy_name = "hydra_fsdp"


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK",
           "RANK", "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "PL_TRAINER_GPUS")


@contextmanager
def job_scope(timeout: float = 600.0):
    """Run one training job; afterwards leave the process as the job found it.

    Yields a list; put the Trainer's strategy in it (``scope.append(trainer.strategy)``)
    so its child processes are waited for.
    """
    saved = {k: os.environ.get(k) for k in DDP_ENV}
    holder: list = []
    try:
        yield holder
    finally:
        for strategy in holder:
            for proc in getattr(strategy, "child_processes", []):
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
