"""DDP and FSDP whose extra ranks re-run exactly this job, and a per-job teardown.

Lightning's script launcher starts ranks 1..N-1 by re-running ``sys.argv``. Under a Hydra
multirun that argv holds ``-m`` and the whole sweep, so every child starts a sweep of its
own, and the DDP environment variables that rank 0 set for job 1 (LOCAL_RANK, MASTER_PORT,
WORLD_SIZE, ...) stay in its environment, so job 2 believes an outside launcher made its
processes and waits for ranks that never come (Lightning issue 11300).

Here the strategies take ``relaunch(local_rank) -> (argv, cwd)``: the command that re-runs
the current job, and only it (the Hydra adapter builds it from the job's own overrides; see
``hydra_app.job_command``). After each job ``job_scope`` waits for the children, destroys the
process group and puts the environment back as it was before the job.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from typing import Callable

import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

Relaunch = Callable[[int], tuple[list[str], str]]


class _JobLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher, but children run ``relaunch(local_rank)``."""

    def __init__(self, *args, relaunch: Relaunch, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relaunch = relaunch

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        for local_rank in range(1, self.num_processes):
            command, cwd = self.relaunch(local_rank)
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)}, cwd=cwd))


class _RelaunchMixin:
    """For Lightning strategies that start ranks by re-running the script."""

    def __init__(self, *args, relaunch: Relaunch | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._relaunch = relaunch

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if self._relaunch is not None and type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = _JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes,
                                          relaunch=self._relaunch)

    @property
    def child_processes(self) -> list[subprocess.Popen]:
        return list(getattr(self._launcher, "procs", []) or [])


class JobDDPStrategy(_RelaunchMixin, DDPStrategy):
    """``DDPStrategy`` whose extra ranks run ``relaunch``'s command (safe in Hydra multiruns)."""

    strategy_name = "job_ddp"


class JobFSDPStrategy(_RelaunchMixin, FSDPStrategy):
    """``FSDPStrategy`` whose extra ranks run ``relaunch``'s command."""

    strategy_name = "job_fsdp"


DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK",
           "RANK", "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "PL_TRAINER_GPUS")


@contextmanager
def job_scope(strategy=None, timeout: float = 600.0):
    """Run one training job; afterwards leave the process as the job found it.

    The child processes of ``strategy`` (if any) are waited for, the process group is
    destroyed and the DDP environment variables are restored.
    """
    saved = {k: os.environ.get(k) for k in DDP_ENV}
    try:
        yield
    finally:
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
