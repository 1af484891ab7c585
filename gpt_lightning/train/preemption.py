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

Across ranks (many nodes): a signal delivered to any one rank stops every rank at the same
step (the ranks exchange the signal number after each step, so a SIGUSR1 that reached rank 3
only still requeues the job, once, from rank 0). When that step ends an epoch or a validation
interval, the ranks first validate, so the checkpoint (and the loss history and best
checkpoint) holds that validation. A rank that is blocked waiting for its peers (in
``init_process_group``, before training) cannot run a Python handler: a watcher thread,
woken through ``signal.set_wakeup_fd``, ends it after a second with the same line and code.

This replaces Lightning's own SIGTERM handling, which stops at the next batch without a
checkpoint and exits with code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
BLOCKED_GRACE_S = 1.0  # a main thread that has not handled a signal by then is blocked in C code


class Preempted(SystemExit):
    """The job was stopped by a signal; its exit code is 128 + the signal number."""


class Preemption:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase: str | None = None  # None (not catching), "before", "training", "after"
        self.report = True
        self._previous: dict = {}
        self._stopping = False
        self._wakeup: tuple[int, int] | None = None  # (read end, write end) of the watcher's pipe
        self._previous_wakeup = -1

    @contextmanager
    def catching(self, report: bool = True):
        """Catch SIGNALS for the duration of a job; ``report``: this process prints the line."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.signum, self.phase, self.report, self._stopping = None, "before", report, False
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._install()
        self._start_watcher()
        try:
            yield
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self.phase = None
            self._stop_watcher()

    def _start_watcher(self) -> None:
        """A thread that ends the process when a signal arrives while the main thread is blocked
        in C code (waiting for its peers) before training: Python handlers run only between
        bytecodes of the main thread."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except ValueError:  # not the main thread of the main interpreter
            os.close(read)
            os.close(write)
            return
        self._wakeup = (read, write)
        threading.Thread(target=self._watch, args=(read,), name="preemption-watcher", daemon=True).start()

    def _stop_watcher(self) -> None:
        if self._wakeup is None:
            return
        signal.set_wakeup_fd(self._previous_wakeup)
        read, write = self._wakeup
        self._wakeup = None
        os.close(write)  # the watcher reads end-of-file and returns
        time.sleep(0)

    def _watch(self, read: int) -> None:
        try:
            while True:
                data = os.read(read, 64)
                if not data:
                    return
                signum = next((s for s in data if s in SIGNALS), None)
                if signum is None or self.phase != "before":
                    continue
                time.sleep(BLOCKED_GRACE_S)
                if self.phase == "before" and not self._stopping:  # the main thread did not get to it
                    self.signum = self.signum or signum
                    self._print(None, None, always=True)  # each blocked rank says why it ends
                    os._exit(128 + int(self.signum))
        finally:
            os.close(read)

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
        """Whether any rank got a signal during training (a collective when there are several
        ranks: each learns the signal, so rank 0 names and requeues it even when another got it)."""
        mine = int(self.signum or 0) if self.phase == "training" else 0
        if trainer.world_size > 1:
            import torch

            found = trainer.strategy.reduce(torch.tensor(float(mine), device=trainer.strategy.root_device),
                                            reduce_op="max")
            mine = int(found.item())
            if mine and self.signum is None:
                self.signum = mine
        return bool(mine)

    def stop(self, saved: Path | None, step: int | None = None) -> None:
        """Print one line (once, on the reporting process) and exit with 128 + the signal number."""
        self._stopping = True
        signum = self.signum or signal.SIGTERM
        self._print(saved, step)
        raise Preempted(128 + int(signum))

    def _print(self, saved: Path | None, step: int | None, always: bool = False) -> None:
        signum = self.signum or signal.SIGTERM
        name = signal.Signals(signum).name
        if not (self.report or always):
            return
        if saved is None:
            line = f"stopped by {name} before training started; nothing to save, run the same command again"
        else:
            line = (f"stopped by {name} after step {step}: {saved} holds that state; the same command with "
                    f"ckpt_path=auto (and the same hydra.run.dir) resumes there")
        requeued = slurm_requeue() if signum == signal.SIGUSR1 and self.report else None
        print(f"\npreempted: {line}" + (f"; {requeued}" if requeued else ""), file=sys.stderr, flush=True)


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
