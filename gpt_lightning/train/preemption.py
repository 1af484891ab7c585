"""Pre-emption: a signal that ends a job early leaves a fresh ``last.ckpt`` behind.

SIGTERM (what schedulers, ``kill`` and SLURM's pre-emption send) and SIGUSR1 (the signal
SLURM's ``#SBATCH --signal=USR1@<seconds>`` sends before a time limit; Lightning's SLURM
plugin listens to it too) are caught while a job runs:

- before training starts there is nothing to save: the job stops at once;
- during training the current optimizer step is finished, ``checkpoints/last.ckpt`` is
  written (every rank agrees on when), and the process exits with 128 + the signal number
  (143 for SIGTERM, 138 for SIGUSR1) after one line saying so. The same command with
  ``ckpt_path=auto`` and a fixed ``hydra.run.dir`` resumes exactly there;
- after training (export, result.json) the job finishes as usual: its files are complete.

Under SLURM (``SLURM_JOB_ID`` set) SIGUSR1 also requeues the job (``scontrol requeue``,
array jobs as ``<array id>_<task id>``), as Lightning's SLURM plugin does; SIGTERM does not
(``scancel`` sends it, and a pre-empting SLURM requeues by itself).

This replaces Lightning's own SIGTERM handling, which stops at the next batch without a
checkpoint and exits with code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """The job was stopped by a signal; its exit code is 128 + the signal number."""


class Preemption:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase: str | None = None  # None (not catching), "before", "training", "after"
        self.report = True
        self._previous: dict = {}

    @contextmanager
    def catching(self, report: bool = True):
        """Catch SIGNALS for the duration of a job; ``report``: this process prints the line."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.signum, self.phase, self.report = None, "before", report
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._install()
        try:
            yield
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self.phase = None

    def _install(self) -> None:
        if self.phase is not None and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        if self.phase == "before":
            self.stop(None)

    # ---- called by the LastCheckpoint callback ---------------------------------------------
    def training_started(self) -> None:
        """Training (or its sanity check) begins: from now on a signal means checkpoint and stop.

        Lightning installed its own SIGTERM handler just before; ours replaces it again."""
        if self.phase is not None:
            self.phase = "training"
            self._install()

    def training_ended(self) -> None:
        if self.phase is not None:
            self.phase = "after"

    def requested(self, trainer) -> bool:
        """Whether any rank got a signal during training (a collective when there are several ranks)."""
        mine = self.signum is not None and self.phase == "training"
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(mine, all=False))
        return mine

    def stop(self, saved: Path | None, step: int | None = None) -> None:
        """Print one line (once, on the reporting process) and exit with 128 + the signal number."""
        signum = self.signum or signal.SIGTERM
        name = signal.Signals(signum).name
        if self.report:
            if saved is None:
                line = f"stopped by {name} before training started; nothing to save, run the same command again"
            else:
                line = (f"stopped by {name} after step {step}: {saved} holds that state; the same command with "
                        f"ckpt_path=auto (and the same hydra.run.dir) resumes there")
            requeued = slurm_requeue() if signum == signal.SIGUSR1 else None
            print(f"\npreempted: {line}" + (f"; {requeued}" if requeued else ""), file=sys.stderr, flush=True)
        raise Preempted(128 + int(signum))


def slurm_requeue() -> str | None:
    """``scontrol requeue`` this SLURM job (None outside SLURM); returns what happened, in words."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else job
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"could not requeue SLURM job {job} ({err})"
    if done.returncode:
        return f"could not requeue SLURM job {job} (scontrol: {' '.join(done.stderr.split())[:200]})"
    return f"requeued SLURM job {job}"


PREEMPTION = Preemption()  # signals are per process, so is this
