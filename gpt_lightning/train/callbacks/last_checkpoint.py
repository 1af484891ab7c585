"""LastCheckpoint: the latest state in checkpoints/last.ckpt, written atomically and on pre-emption."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from gpt_lightning.train.preemption import PREEMPTION


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: every N steps (or at each validation), once more when training ends, so
    the file always holds the final state of a finished run, and when a pre-emption signal
    arrives (see ``preemption``): at the end of that optimizer step, then the process exits.

    ``every_n_minutes`` spares the disk: after a validation, last.ckpt is written only when that
    many minutes have passed since it was last written (or training started), so a long run
    rewrites its (large) last.ckpt a few times an hour rather than after every epoch, and a
    crash loses at most that much training; the end of training and a pre-emption signal
    always write it. None: after every validation."""

    def __init__(self, dirpath, every_n_train_steps: int | None = None, every_n_minutes: float | None = None) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps)
        self._step_seen: int | None = None
        self._interval_s = None if every_n_minutes is None else 60.0 * every_n_minutes
        self._written_at = time.monotonic()
        self._due = False  # a validation ended and the best checkpoint is chosen at the epoch's end

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def load_state_dict(self, state_dict) -> None:
        # A resume from another run's folder: that folder's last.ckpt is not this one's (and
        # Lightning would warn that it does not reload it).
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_started()

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_started()
        self._step_seen = trainer.global_step
        self._written_at = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if stepped and PREEMPTION.requested(trainer):  # every rank asks at each step, so all agree
            self._save(trainer)
            PREEMPTION.stop(self.path, trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning (2.6) writes save_last at validation end only when a top-k checkpoint was
        # written in that step, and this callback keeps no top-k: with no step interval,
        # last.ckpt is written after each validation. When the validation ends an epoch, the
        # best checkpoint (ModelCheckpoint) is chosen in on_train_epoch_end, so last.ckpt is
        # written then, after it: it must hold the best checkpoint's path and score, or a
        # resume from it forgets the best.
        super().on_validation_end(trainer, pl_module)
        if self._every_n_train_steps == 0 and not trainer.sanity_checking:
            if self._should_save_on_train_epoch_end(trainer):
                self._due = True
            else:
                self._save_if_due(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._due:  # Lightning runs checkpoint callbacks last, in order: after the best one
            self._due = False
            self._save_if_due(trainer)

    def _save_if_due(self, trainer: L.Trainer) -> None:
        if self._interval_s is None or time.monotonic() - self._written_at >= self._interval_s:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_ended()
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._last_global_step_saved = trainer.global_step
            self._written_at = time.monotonic()
