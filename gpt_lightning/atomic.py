"""Atomic file writes: a crash leaves either the old file or the new one, never half of one.

The temporary file is ``.<name>.<host>-<pid>.<random>.tmp`` in the target's folder, so a
later process can tell a leftover of a killed writer (its pid is gone) from a file that a
live writer is still filling, and remove it (:func:`remove_stale_tmp`). The finished file
has the mode a plain ``open`` would give it (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

from gpt_lightning.errors import ConfigError

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
# .<target name>.<host>-<pid>.<mkstemp's random part>.tmp
_TMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
LEGACY_TMP_AGE_S = 3600.0  # a tmp file without a writer id, untouched this long, is a leftover


class WriteError(ConfigError):
    """A file that could not be written (folder not writable, disk full): one line, exit 2."""


def atomic_write(target: str | Path, write: Callable[[str], None], hint: str = "") -> Path:
    """Call ``write(tmp_path)``, fsync it, then rename it over ``target``.

    The temporary file lives in the target's folder so the rename is atomic on POSIX. A
    folder that cannot be written, or a write that fails for lack of space, raises
    :class:`WriteError` naming the file and the free space (``hint`` says what to change).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{_HOST}-{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise WriteError(f"cannot write {target}: {target.parent} is not writable ({err.strerror or err})"
                         + (f"; {hint}" if hint else "")) from None
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # what open() would create, not mkstemp's 0600
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except (OSError, RuntimeError) as err:
        Path(tmp).unlink(missing_ok=True)
        if not _is_write_failure(err, tmp):
            raise
        raise WriteError(_write_failed(target, err) + (f"; {hint}" if hint else "")) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    try:  # Linux says it without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_write_failure(err: OSError | RuntimeError, tmp: str) -> bool:
    """Whether ``err`` is about writing ``tmp`` (not, say, about reading an input file).

    torch.save reports a failed write (e.g. a full disk) as a RuntimeError of its zip writer."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS) or err.filename in (None, tmp)
    text = str(err)
    return any(s in text for s in ("unexpected pos", "PytorchStreamWriter", "file write failed", "No space left"))


def _write_failed(target: Path, err: BaseException) -> str:
    free = free_bytes(target.parent)
    full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < 1 << 20)
    if full:
        why = "the disk is full"
    elif isinstance(err, RuntimeError):
        why = f"the write failed (torch: {' '.join(str(err).split())[-120:]})"
    else:
        why = err.strerror or str(err)
    room = f"{free / 2**20:,.1f} MiB free" if free is not None else "free space unknown"
    return f"could not write {target}: {why} ({room} on {target.parent}); free some space and run again"


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def remove_stale_tmp(folder: str | Path, *, all_of_them: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``; return them.

    A tmp file is stale when its writer (host, pid in its name) is this host and that
    process is gone. ``all_of_them`` (the caller holds the folder's lock, so nobody else
    writes there) removes every one. A tmp file without a writer id (older versions) is
    removed once it has not been touched for an hour.
    """
    folder = Path(folder)
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        m = _TMP.match(path.name)
        if all_of_them:
            stale = True
        elif m:
            stale = m["host"] == _HOST and not pid_alive(int(m["pid"]))
        else:
            try:
                stale = now - path.stat().st_mtime > LEGACY_TMP_AGE_S
            except OSError:
                stale = False
        if stale:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
