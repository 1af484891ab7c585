"""Lightning checkpoints written atomically: a crash mid-save never leaves a corrupt file, and
read with the module paths of earlier versions mapped (config/legacy.py), so old runs resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gpt_lightning.atomic import atomic_write
from gpt_lightning.config.legacy import load_checkpoint


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
