"""Many nodes: who is global rank 0 before the Trainer exists, one run folder per job, lost peers.

The launchers a cluster uses (Lightning's own environment-variable launch, ``torchrun``,
SLURM's ``srun``) each tell a process its place in the job through environment variables;
Lightning reads them when the Trainer is built (its ``ClusterEnvironment`` plugins). Two
things are needed earlier, and are read here from the same variables:

- :func:`launch_rank`: the global rank, so that only rank 0 takes the run folder's lock.
  Lightning's ``rank_zero_only.rank`` is only a guess until the Trainer exists: with the
  environment-variable launch it reads ``LOCAL_RANK`` (0 on every node), so every node took
  the lock as rank 0;
- :func:`folder_name`: the run folder's name (Hydra resolver ``run_folder``, see
  conf/base.yaml). Hydra's dated folder comes from each node's clock, so nodes started a
  second apart wrote two folders; a job id that every rank sees (``run.name``, SLURM's job
  id under ``srun``, torchrun's ``--rdzv-id``) names it instead.

When the Trainer runs, :class:`SameRunFolder` checks (one collective) that every rank writes
into rank 0's folder and stops every rank with one line otherwise, before anything is saved.
:func:`peer_failure` turns the error a rank gets when another rank died (gloo: the
connection closed; NCCL/gloo: the ``strategy.timeout_s`` expired) into one line saying how
to resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import lightning as L

from gpt_lightning.errors import ConfigError

RUN_NAME_KEY = "run.name"


def _slurm_tasks() -> int:
    """Tasks of this SLURM job step (srun), 0 outside one."""
    if "SLURM_PROCID" not in os.environ or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return 0
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 0)


def devices_per_node(devices) -> int:
    """Processes per node for ``trainer.devices`` (a count, a list, -1 or auto)."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    import torch

    return max(1, torch.cuda.device_count())


def launch_rank(devices=1) -> int:
    """This process's global rank as its launcher set it (0 when nothing launched it)."""
    env = os.environ
    if env.get("RANK") is not None:  # torchrun, torch.distributed.launch
        return int(env["RANK"])
    if _slurm_tasks() > 1:  # srun with one task per device
        return int(env["SLURM_PROCID"])
    node = int(env.get("NODE_RANK") or env.get("GROUP_RANK") or 0)  # Lightning's own launch
    return node * devices_per_node(devices) + int(env.get("LOCAL_RANK") or 0)


def job_id() -> str | None:
    """The id every rank of a multi-process job sees: ``slurm-<id>`` under srun, ``torchrun-<id>``
    with torchrun's ``--rdzv-id``; None for a single process or a launch without one."""
    env = os.environ
    if _slurm_tasks() > 1 and env.get("SLURM_JOB_ID"):
        array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{array}_{task}" if array and task else f"slurm-{env['SLURM_JOB_ID']}"
    run_id = env.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun-{run_id}"
    return None


def folder_name(name, default: str) -> str:
    """The last part of the run folder: ``run.name`` when given, else the job's id, else ``default``
    (Hydra's date). A requeued SLURM job keeps its id, so ``ckpt_path=auto`` finds its checkpoints."""
    if name not in (None, ""):
        return str(name)  # checked by config.schemas (one line) once Hydra hands the config over
    return job_id() or default


class SameRunFolder(L.Callback):
    """Every rank must write into rank 0's run folder: one line on every rank otherwise."""

    def __init__(self, out: Path) -> None:
        self.out = str(Path(out).resolve())

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if trainer.world_size < 2:
            return
        theirs = trainer.strategy.broadcast(self.out, src=0)
        differ = trainer.strategy.reduce_boolean_decision(theirs != self.out, all=False)
        if differ:
            mine = f" (this rank, {trainer.global_rank}, chose {self.out})" if theirs != self.out else ""
            raise ConfigError(
                f"the ranks of this job chose different run folders: rank 0 writes into {theirs}{mine}; "
                f"give every node the same run.name=<name> or hydra.run.dir=<folder> (under srun and torchrun "
                f"--rdzv-id the job id names it)")


# errors a rank gets when a peer is gone: gloo's closed connection, a collective's timeout
PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out",
               "Socket Timeout", "NCCL communicator was aborted", "Broken pipe")


def peer_failure(err: BaseException, timeout_s: float | None) -> str | None:
    """One line for an error that means another rank died or stopped answering (None otherwise)."""
    import torch.distributed as dist

    text = " ".join(str(err).split())
    is_dist = isinstance(err, getattr(dist, "DistError", ())) or any(p in text for p in PEER_ERRORS)
    if not is_dist or not dist.is_available() or not dist.is_initialized():
        return None
    cause = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", text)  # gloo's source location
    cause = re.split(r" Exception raised from |\. This is typically", cause)[0][:160].rstrip(". ")
    wait = f" (strategy.timeout_s={timeout_s:g})" if timeout_s else ""
    return (f"another rank stopped answering{wait}: {cause}; this rank stops too. When every node is "
            f"back, start the same command with ckpt_path=auto to resume from the last checkpoint")
