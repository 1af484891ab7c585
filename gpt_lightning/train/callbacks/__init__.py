"""Every callback of a training run, one per module; ``train.job`` builds the list.

samples          SampleText: a sample after each validation
loss_history     LossHistory: history.json and loss.png
best_checkpoint  BestCheckpoint: the best checkpoint, kept across a resume into another folder
last_checkpoint  LastCheckpoint: checkpoints/last.ckpt
final_validation ValidateAtEnd: a validation on the last step of a run stopped by max_steps
train_eval       TrainSetLoss: train/eval_loss
evaluation       EvalCallback: benchmark scores during training (callbacks.eval)
responses        WriteResponses: finetune.py's answers on the test split
"""

from gpt_lightning.train.callbacks.final_validation import ValidateAtEnd
from gpt_lightning.train.callbacks.last_checkpoint import LastCheckpoint
from gpt_lightning.train.callbacks.loss_history import (
    LossHistory,
    plot_losses,
    write_history,
)
from gpt_lightning.train.callbacks.samples import SampleText
from gpt_lightning.train.callbacks.train_eval import TrainSetLoss

__all__ = ["LastCheckpoint", "LossHistory", "SampleText", "TrainSetLoss", "ValidateAtEnd", "plot_losses", "write_history"]
