"""One live run per run folder, checked before training: lock, writable outputs, no leftovers.

:func:`guard` wraps a job (rank 0 / the launching process takes the lock; every rank
catches pre-emption signals, see ``preemption``):

- an exclusive ``fcntl.flock`` on ``<run>/.run.lock``, held while the job runs. A second
  live run into the same folder stops with one line; the kernel drops the lock of a process
  that dies (even by ``kill -9``), so a stale lock never blocks a resume;
- the run folder, ``checkpoints/`` and ``export/`` must be writable (one line otherwise),
  so a read-only folder fails now and not at the first save after hours of training;
- temporary files that a killed run left in ``checkpoints/`` and ``export/`` are removed
  (the lock says no other writer is alive there);
- a folder that already holds a run (its result.json or checkpoints) is continued only when
  asked: ``ckpt_path=auto`` or a checkpoint of that folder resumes it; any other run stops with
  one line, so two runs never mix their checkpoints, TensorBoard events and result.json.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from gpt_lightning.atomic import remove_stale_tmp
from gpt_lightning.errors import bad_value
from gpt_lightning.train.preemption import PREEMPTION

log = logging.getLogger("gpt_lightning")

LOCK_NAME = ".run.lock"
RUN_DIR_KEY = "hydra.run.dir"
_held: dict[Path, object] = {}  # run folder -> open lock file, for the life of the job


@contextmanager
def guard(out: Path, *, owner: bool, export: bool = True, ckpt_path: str | None = None):
    """Lock ``out`` (if ``owner``), check its outputs, clean leftovers; catch pre-emption signals."""
    out = Path(out)
    outputs = [out, out / "checkpoints"] + ([out / "export"] if export else [])
    if owner:
        check_not_a_file(out)
        check_continues(out, ckpt_path)
        check_writable(outputs)
        lock(out)
    try:
        if owner:
            for folder in outputs[1:]:
                for path in remove_stale_tmp(folder, all_of_them=True):
                    log.info("removed %s, left by an interrupted run", path)
        with PREEMPTION.catching(report=owner):
            yield
    finally:
        if owner:
            unlock(out)


def holds_run(out: Path) -> str | None:
    """What shows that ``out`` holds a run (its result.json or a checkpoint), or None."""
    from gpt_lightning.runs.files import RESULT_FILE

    result = Path(out) / RESULT_FILE
    if result.is_file():
        try:
            import json

            status = str(json.loads(result.read_text()).get("status", ""))
        except (OSError, ValueError, AttributeError):
            status = ""
        if not status.startswith("failed"):  # a job that stopped on a bad value trained nothing
            return f"a finished run ({RESULT_FILE})"
    ckpts = sorted((Path(out) / "checkpoints").glob("*.ckpt"))
    if ckpts:
        return f"the checkpoints of an earlier run ({ckpts[0].name})"
    return None


def check_continues(out: Path, ckpt_path) -> None:
    """A folder holding a run takes only a run that continues it (``ckpt_path=auto`` or one of its
    checkpoints): one line otherwise, before anything is written."""
    from gpt_lightning.train.resume import AUTO

    found = holds_run(out)
    if found is None or str(ckpt_path) == AUTO:
        return
    if ckpt_path:
        try:
            inside = Path(out).resolve() in Path(str(ckpt_path)).expanduser().resolve().parents
        except OSError:
            inside = False
        if inside:
            return
    raise bad_value(RUN_DIR_KEY, str(out), f"it holds {found}; continue that run with ckpt_path=auto, or "
                    "choose a new hydra.run.dir (runs never share a folder)")


def check_not_a_file(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise bad_value(RUN_DIR_KEY, str(out), "a file, not a folder; choose another hydra.run.dir")


def lock(out: Path) -> None:
    """Take the run folder's lock or stop with one line naming the run that holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks, no check
        return
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK_NAME, "a+")
    except OSError as err:
        raise bad_value(RUN_DIR_KEY, str(out), f"the run folder {out} is not writable ({err.strerror or err}); "
                        "make it writable or choose another hydra.run.dir") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise bad_value(RUN_DIR_KEY, str(out), f"another live run ({holder}) is writing into it; wait for it "
                        "to end or choose another hydra.run.dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    _held[out] = fh


def unlock(out: Path) -> None:
    fh = _held.pop(Path(out), None)
    if fh is not None:
        fh.close()  # closing the file drops the flock


def check_writable(folders: list[Path]) -> None:
    """Each folder exists (created if needed) and a file can be created in it; else one line."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder, prefix=".write-test."):
                pass
        except OSError as err:
            what = "the run folder" if folder == folders[0] else f"its {folder.name}/ folder"
            raise bad_value(RUN_DIR_KEY, str(folders[0]), f"{what} {folder} is not writable "
                            f"({err.strerror or err}); make it writable or choose another hydra.run.dir") from None


def is_locked(out: Path) -> bool:
    """Whether a live process holds ``out``'s lock (for tests and tools)."""
    import fcntl

    path = Path(out) / LOCK_NAME
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False

