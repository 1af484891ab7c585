"""LastCheckpoint: the latest state in checkpoints/last.ckpt, written atomically and on pre-emption.

When the best checkpoint was written at the same step, last.ckpt is a hard link to it (one
copy on disk, not two full writes; see checkpoint_io.link_checkpoint)."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from gpt_lightning.train.checkpoint_io import wait_for_checkpoints
from gpt_lightning.train.preemption import PREEMPTION


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: every N steps (or after each validation), once more when training ends, so
    the file always holds the final state of a finished run, and when a pre-emption signal
    arrives (see ``preemption``): at the end of that optimizer step, or after the validation
    that step triggers, then the process exits.

    ``every_n_minutes`` spares the disk: after a validation, last.ckpt is written only when that
    many minutes have passed since it was last written (or training started), so a long run
    rewrites its (large) last.ckpt a few times an hour rather than after every epoch, and a
    crash loses at most that much training; the end of training and a pre-emption signal
    always write it. None: after every validation."""

    def __init__(self, dirpath, every_n_train_steps: int | None = None, every_n_minutes: float | None = None) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps,
                         save_on_train_epoch_end=False)
        self._step_seen: int | None = None
        self._stop_after_validation = False
        self._interval_s = None if every_n_minutes is None else 60.0 * every_n_minutes
        self._written_at = time.monotonic()

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
        if stepped and not self._stop_after_validation and PREEMPTION.requested(trainer):  # all ranks agree
            if _validates_now(trainer):  # stop after it: a resume would skip that validation
                self._stop_after_validation = True
            else:
                self._stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning (2.6) writes save_last at validation end only when a top-k checkpoint was
        # written in that step, and this callback keeps no top-k: with no step interval,
        # last.ckpt is written here, after each validation (where the best checkpoint is written
        # too: train/job.py keeps both at validation end, the moment Lightning resumes from).
        super().on_validation_end(trainer, pl_module)
        if trainer.sanity_checking:
            return
        due = self._interval_s is None or time.monotonic() - self._written_at >= self._interval_s
        if self._every_n_train_steps == 0 and (due or self._stop_after_validation):
            self._save(trainer, after_validation=True)
        if self._stop_after_validation:
            self._stop(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_ended()
        self._save(trainer, after_validation=True)  # a link when the best was written at this last step

    def _stop(self, trainer: L.Trainer) -> None:
        """Save now (even if this step was saved before validation ran), wait for it, exit."""
        self._save(trainer, after_validation=self._stop_after_validation, again=True)
        wait_for_checkpoints(trainer)
        PREEMPTION.stop(self.path, trainer.global_step)

    def _save(self, trainer: L.Trainer, after_validation: bool = False, again: bool = False) -> None:
        if trainer.global_step == self._last_global_step_saved and not again:
            return
        best = _best_saved_now(trainer) if after_validation else None
        if best is not None:  # the state the best checkpoint holds, written a moment ago: a second name
            if trainer.is_global_zero:
                trainer.strategy.checkpoint_io.link_checkpoint(best, self.path)
            trainer.strategy.barrier("last_checkpoint_link")
        else:
            trainer.save_checkpoint(self.path)
        self._last_global_step_saved = trainer.global_step
        self._written_at = time.monotonic()


def _validates_now(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after this training batch."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except Exception:  # another Lightning: stop at once as before
        return False


def _best_saved_now(trainer: L.Trainer) -> str | None:
    """The best checkpoint's path if it was written at this step, in the hook that runs now
    (Lightning runs checkpoint callbacks in the order given; the best one comes first, see
    train/job.py), else None."""
    if getattr(trainer.strategy.checkpoint_io, "link_checkpoint", None) is None:
        return None
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, LastCheckpoint) or not isinstance(cb, ModelCheckpoint) or cb.monitor is None:
            continue
        saved = cb._last_checkpoint_saved if cb._last_global_step_saved == trainer.global_step else None
        if saved and not Path(saved).is_dir():  # not FSDP's sharded checkpoint (a folder): a file to link
            return saved
    return None
