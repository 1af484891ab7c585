"""LossHistory: train and validation loss against tokens seen, as history.json and loss.png."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from gpt_lightning.runs.files import HISTORY_FILE
from gpt_lightning.weights.model_card import HISTORY_STATE, LOSS_PLOT, plot_losses
from gpt_lightning.train.trackers import log_image


def _tensorboard(trainer: L.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class LossHistory(L.Callback):
    """Train and validation loss against tokens seen (and epochs), for plots.

    Logs ``loss_vs_tokens/train`` and ``loss_vs_tokens/val`` to TensorBoard with tokens
    seen as the x-axis, and at the end of fit writes ``history.json`` and draws ``loss.png`` in
    the run folder (loss against tokens seen, epochs on the top axis; also sent to the
    trackers). Its history is saved in checkpoints so a resumed run draws the whole curve. A
    train point is one optimizer step: its token-weighted loss over every micro-batch and rank
    (``GPTLitModule.step_loss``); a validation point is read when validation ends, after the
    module has computed it.
    """

    @property
    def state_key(self) -> str:
        return HISTORY_STATE  # where the card (weights/model_card.py) finds it in a checkpoint

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir else None
        self.train: list[tuple[int, float, float]] = []  # (tokens, loss, epoch progress)
        self.val: list[tuple[int, float, float]] = []
        self._pending: list[tuple[int, object, float]] = []  # losses still on the device

    def _flush(self) -> None:
        """Move pending losses to the host in one transfer (not one sync per step)."""
        if self._pending:
            import torch

            values = torch.stack([loss for _, loss, _ in self._pending]).float().tolist()
            self.train += [(t, v, e) for (t, _, e), v in zip(self._pending, values)]
            self._pending = []

    def _epoch_progress(self, trainer: L.Trainer, batch_idx: int) -> float:
        n = trainer.num_training_batches
        return trainer.current_epoch + ((batch_idx + 1) / n if n and n != float("inf") else 0.0)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not pl_module.step_done:  # a micro-batch inside an accumulation window
            return
        self._pending.append((pl_module.tokens_seen, pl_module.step_loss, self._epoch_progress(trainer, batch_idx)))
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._flush()
            tb = _tensorboard(trainer)
            if tb is not None:
                tokens, value, _ = self.train[-1]
                tb.add_scalar("loss_vs_tokens/train", value, tokens)

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        # Not on_validation_epoch_end: Lightning runs the callbacks' one before the module's,
        # which computes the loss, so it would still hold the previous validation's.
        if trainer.sanity_checking or pl_module.val_loss is None:
            return
        value = pl_module.val_loss
        epoch = self._epoch_progress(trainer, trainer.fit_loop.epoch_loop.batch_idx)
        self.val.append((pl_module.tokens_seen, value, epoch))
        tb = _tensorboard(trainer)
        if tb is not None:
            tb.add_scalar("loss_vs_tokens/val", value, pl_module.tokens_seen)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        self._flush()
        if self.out_dir is not None and self.train:
            write_history(self.train, self.val, self.out_dir / HISTORY_FILE)
            plot = plot_losses(self.train, self.val, self.out_dir / LOSS_PLOT)
            log_image(trainer, "loss", plot, trainer.global_step)  # TensorBoard, W&B, MLflow

    def state_dict(self) -> dict:
        self._flush()
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state: dict) -> None:
        self.train, self.val = list(state["train"]), list(state["val"])


def write_history(train, val, path: Path) -> Path:
    """``history.json``: {"train": [[tokens, loss, epoch], ...], "val": [...]} (read by compare)."""
    import json

    from gpt_lightning.atomic import atomic_write

    text = json.dumps({"train": [list(p) for p in train], "val": [list(p) for p in val]}) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
