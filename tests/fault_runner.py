"""Run train.py with a fault injected at a chosen moment (used by tests/test_faults.py).

    python tests/fault_runner.py <train.py overrides...>

``FAULT`` (environment) says what happens:

- ``kill:<glob>:<n>:<phase>``: SIGKILL this process at the n-th atomic write of a file whose
  name matches ``<glob>``; phase ``write`` = the temporary file is half written, ``rename``
  = it is complete but not yet renamed into place, ``after`` = right after the rename;
- ``kill-step:<n>``: SIGKILL this process as training step n starts;
- ``wait-step:<n>:<marker>``: as step n starts, create the file ``<marker>`` and wait (up to
  60 s) for a signal to arrive, so a test can send a real signal at a known moment;
- ``stop-step:<n>``: SIGSTOP this process as training step n starts (a node that hangs).

With several ranks (simulated nodes), ``FAULT_RANK`` names the only global rank the fault
applies to; a worker that torchrun restarted (``TORCHELASTIC_RESTART_COUNT`` > 0) runs clean.
"""

import fnmatch
import os
import runpy
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_atomic_writes(pattern: str, nth: int, phase: str) -> None:
    from gpt_lightning import atomic
    from gpt_lightning.train import checkpoint_io
    from gpt_lightning.weights import hf_io
    from gpt_lightning.data import token_cache

    real = atomic.atomic_write
    seen = [0]

    def faulty(target, write, *args, **kwargs):
        if not fnmatch.fnmatch(Path(target).name, pattern):
            return real(target, write, *args, **kwargs)
        seen[0] += 1
        if seen[0] != nth:
            return real(target, write, *args, **kwargs)
        if phase == "after":
            result = real(target, write, *args, **kwargs)
            _die()
            return result

        def broken(tmp):
            write(tmp)
            if phase == "write":
                with open(tmp, "r+b") as fh:
                    fh.truncate(os.path.getsize(tmp) // 2)
            _die()

        return real(target, broken, *args, **kwargs)

    for module in (checkpoint_io, hf_io, token_cache):
        module.atomic_write = faulty


def _at_step(step: int, action) -> None:
    from gpt_lightning.train.module import GPTLitModule

    real = GPTLitModule.on_train_batch_start

    def hooked(self, batch, batch_idx):
        if self.global_step == step and not getattr(self, "_fault_done", False):
            self._fault_done = True
            action()
        return real(self, batch, batch_idx)

    GPTLitModule.on_train_batch_start = hooked


def _wait_for_signal(marker: str) -> None:
    from gpt_lightning.train.preemption import PREEMPTION

    Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while PREEMPTION.signum is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _fault_applies() -> bool:
    from gpt_lightning.train.cluster import launch_rank

    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0) > 0:
        return False
    return "FAULT_RANK" not in os.environ or launch_rank() == int(os.environ["FAULT_RANK"])


def main() -> None:
    kind, *spec = os.environ.get("FAULT", "none").split(":") if _fault_applies() else ("none",)
    if kind == "kill":
        _kill_in_atomic_writes(spec[0], int(spec[1]), spec[2])
    elif kind == "kill-step":
        _at_step(int(spec[0]), _die)
    elif kind == "stop-step":
        _at_step(int(spec[0]), lambda: os.kill(os.getpid(), signal.SIGSTOP))
    elif kind == "wait-step":
        _at_step(int(spec[0]), lambda: _wait_for_signal(":".join(spec[1:])))
    sys.argv = [str(ROOT / "train.py"), *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")  # as `python train.py ...` runs it


if __name__ == "__main__":
    main()
