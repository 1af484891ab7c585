"""Lightning checkpoints written atomically (a crash mid-save never leaves a corrupt file),
optionally in the background, and a second name for the same checkpoint without a second copy;
read with the module paths of earlier versions mapped (config/legacy.py), so old runs resume.

- :class:`AtomicCheckpointIO` saves to a temporary file in the same folder, fsyncs it, then
  renames it into place; ``link_checkpoint`` gives an existing checkpoint another name (a
  hard link: no second copy on disk, and deleting one name never breaks the other).
- :class:`AsyncAtomicCheckpointIO` (``callbacks.checkpoint.async_write``) copies the
  checkpoint's tensors to host memory (the only part that stalls training), then writes it
  in a background thread; writes, links and removals run in order on that one thread. It is
  Lightning's ``AsyncCheckpointIO`` except that tensors are copied to the CPU, not cloned on
  their device (a clone of a large model's optimizer state on the GPU would run out of memory).
  ``wait()`` blocks until every queued write is on disk (before a pre-empted process exits,
  and at the end of fit through ``teardown``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO
from lightning.fabric.utilities.apply_func import apply_to_collection

from gpt_lightning.atomic import atomic_write
from gpt_lightning.config.legacy import load_checkpoint


def _link_or_copy(source: Path, tmp: str) -> None:
    os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links: a copy
        shutil.copyfile(source, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file in the same folder, fsyncs it, then renames it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: _PATH, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Our own run's checkpoint (the full pickle, like every reader here), unless the caller asks
        for ``weights_only``; a local file only (remote paths go to Lightning's reader)."""
        if weights_only or "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return load_checkpoint(path)
    def link_checkpoint(self, source: _PATH, path: _PATH) -> None:
        """``path`` becomes another name of the checkpoint ``source`` (atomically replaced)."""
        atomic_write(path, lambda tmp: _link_or_copy(Path(source), tmp))

    def wait(self) -> None:
        """Nothing is queued: every save has returned when it is on disk."""


def _host_copy(checkpoint: dict) -> dict:
    """The checkpoint with every tensor copied to host memory; tensors that are the same view of
    one storage (tied weights: wte and lm_head) stay one tensor, so the file holds them once."""
    copies: dict[tuple, torch.Tensor] = {}

    def copy(t: torch.Tensor) -> torch.Tensor:
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if key not in copies:
            copies[key] = t.detach().to("cpu", copy=True)
        return copies[key]

    return apply_to_collection(checkpoint, torch.Tensor, copy)


class AsyncAtomicCheckpointIO(AsyncCheckpointIO):
    """Atomic checkpoints written by a background thread (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(AtomicCheckpointIO())

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        self._raise_pending()
        self._ensure_setup()
        host = _host_copy(checkpoint)
        self._executor.submit(self._run, self.checkpoint_io.save_checkpoint, host, path, storage_options)

    def link_checkpoint(self, source: _PATH, path: _PATH) -> None:
        self._raise_pending()
        self._ensure_setup()
        self._executor.submit(self._run, self.checkpoint_io.link_checkpoint, source, path)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Queued too: after the writes before it (a queued write of that file, or a link to it)."""
        self._raise_pending()
        self._ensure_setup()
        self._executor.submit(self._run, self.checkpoint_io.remove_checkpoint, path)

    def _run(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as err:  # raised in the training thread at the next call
            self._error = err

    def _raise_pending(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def wait(self) -> None:
        """Block until every queued write is on disk; raise the first error one of them hit."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._raise_pending()

    def teardown(self) -> None:
        self.wait()
        super().teardown()


def checkpoint_io(async_write: bool):
    return AsyncAtomicCheckpointIO() if async_write else AtomicCheckpointIO()


def wait_for_checkpoints(trainer) -> None:
    """Every checkpoint this trainer queued is on disk."""
    getattr(trainer.strategy.checkpoint_io, "wait", lambda: None)()
