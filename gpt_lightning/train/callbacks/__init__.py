"""Every callback of a training run, one per module; ``train.job`` builds the list.

samples          SampleText: a sample after each validation
loss_history     LossHistory: history.json and loss.png
best_checkpoint  BestCheckpoint: the best checkpoint, kept across a resume into another folder
last_checkpoint  LastCheckpoint: checkpoints/last.ckpt
final_validation ValidateAtEnd: a validation on the last step of a run stopped by max_steps
train_eval       TrainSetLoss: train/eval_loss
evaluation       EvalCallback: benchmark scores during training (callbacks.eval)
responses        WriteResponses: finetune.py's answers on the test split
run_record       RunRecord: what the model card says about the run

One way to get what callbacks hold, here: :func:`find` (a callback of the running Trainer)
and :func:`results` (what they measured, for result.json: every callback with a ``results()``
method adds its dict). A callback whose checkpointed state is read elsewhere takes its
``state_key`` from a constant of the reader (RunRecord, LossHistory: weights/model_card.py).
"""

from __future__ import annotations

from typing import TypeVar

import lightning as L

from gpt_lightning.train.callbacks.final_validation import ValidateAtEnd
from gpt_lightning.train.callbacks.last_checkpoint import LastCheckpoint
from gpt_lightning.train.callbacks.loss_history import LossHistory, write_history
from gpt_lightning.train.callbacks.run_record import RunRecord
from gpt_lightning.train.callbacks.samples import SampleText
from gpt_lightning.train.callbacks.train_eval import TrainSetLoss

__all__ = ["LastCheckpoint", "LossHistory", "RunRecord", "SampleText", "TrainSetLoss", "ValidateAtEnd", "find",
           "results", "write_history"]

C = TypeVar("C", bound=L.Callback)


def find(trainer: L.Trainer, cls: type[C]) -> C | None:
    """The Trainer's callback of type ``cls``, or None."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, cls)), None)


def results(trainer: L.Trainer) -> dict:
    """What the run's callbacks measured, merged in callback order (for result.json and the card)."""
    merged: dict = {}
    for callback in trainer.callbacks:
        report = getattr(callback, "results", None)
        if callable(report):
            merged.update(report() or {})
    return merged
