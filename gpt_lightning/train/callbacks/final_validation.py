"""ValidateAtEnd: a run that stops in the middle of an epoch (``trainer.max_steps``) validates
on its last step, so its best checkpoint, result.json and card hold the final weights' loss.

Lightning validates when an epoch ends or at ``val_check_interval``; a run stopped by
``max_steps`` between two of those never validates its last steps (best ``n/a`` when it
stops before the first validation). Lightning does validate on the batch where
``trainer.should_stop`` is set, so this callback sets it on the step that reaches
``max_steps``: one validation there, and none twice when that step ends an epoch anyway.
"""

from __future__ import annotations

import lightning as L


class ValidateAtEnd(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
