"""TrainSetLoss: the loss on training windows in eval mode after each validation (train/eval_loss)."""

from __future__ import annotations

import lightning as L


class TrainSetLoss(L.Callback):
    """After each validation, the loss on training windows in eval mode: ``train/eval_loss``.

    ``train/loss`` is each step's own batch in train mode (dropout on), before that step's
    update. "LLMs from scratch" reports its train loss the other way: the current model in
    eval mode (no dropout) on a few training batches. This callback measures that: the
    token-weighted loss over the first ``batches`` training batches in their stored order
    (None: every batch), with the same weights the validation just scored. Every rank scores
    the same batches, so sharded (FSDP) models take part everywhere and ranks agree.
    """

    def __init__(self, batches: int | None = None) -> None:
        from gpt_lightning.errors import bad_value

        if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
            raise bad_value("callbacks.train_eval.batches", batches,
                            "a number of training batches >= 1, null for all, or 0 for off")
        self.batches = batches

    def setup(self, trainer, pl_module, stage: str) -> None:
        if getattr(trainer.datamodule, "train_set", None) is None:
            from gpt_lightning.errors import bad_value

            raise bad_value("callbacks.train_eval.batches", self.batches,
                            "only pretraining data (train.py) has training windows to score; use 0 here")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        import torch
        from torch.utils.data import DataLoader

        dm = trainer.datamodule
        loader = DataLoader(dm.train_set, batch_size=dm.batch_size, shuffle=False)  # fixed order
        total = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        count = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if self.batches is not None and i >= self.batches:
                        break
                    loss, n = pl_module.loss({k: v.to(pl_module.device) for k, v in batch.items()})
                    total += loss.double() * n
                    count += n
        finally:
            pl_module.train(was_training)
        pl_module.log("train/eval_loss", (total / count.clamp(min=1)).float(), sync_dist=False)
