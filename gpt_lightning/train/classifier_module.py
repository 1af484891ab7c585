"""The LightningModule of ``finetune.py task=classification``.

It is :class:`~gpt_lightning.train.module.GPTLitModule` (optimizer, schedule, step
accounting, throughput, checkpoint extras) with a loss per text instead of per token: the
cross-entropy of the class logits at each text's last real token, summed over the texts of
the step and divided by their count (so ``train/loss`` is the mean over texts, as the book
computes it). Validation also fills a confusion matrix (summed over ranks, one all-reduce
of a K x K tensor), from which it logs ``val/accuracy`` and ``val/macro_f1`` beside ``val/loss``.
The metrics (evaluate/classification_metrics.py) are not torchmetrics because the confusion matrix
is one ``bincount`` and the module already reduces its sums across ranks itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpt_lightning.data import IGNORE_INDEX
from gpt_lightning.evaluate.classification_metrics import confusion_matrix, scores
from gpt_lightning.train.module import GPTLitModule


class ClassifierLitModule(GPTLitModule):
    """``model`` is a :class:`~gpt_lightning.classifier.GPTClassifier`."""

    def loss_sum(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._forward(batch["input_ids"], attention_mask=batch["attention_mask"])  # (B, K)
        labels = batch["labels"]
        total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
        self._last_logits = logits.detach()
        return total, (labels != IGNORE_INDEX).sum()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["labels"] = list(self.model.labels)  # id2label for an export from this checkpoint

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        k = self.model.num_labels
        self._confusion = torch.zeros((k, k), dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self._confusion += confusion_matrix(self._last_logits, batch["labels"], self.model.num_labels)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        matrix = self.trainer.strategy.reduce(self._confusion.double(), reduce_op="sum")
        self.val_confusion = matrix.long().cpu()
        for name, value in scores(self.val_confusion).items():
            self.log(f"val/{name}", value, prog_bar=name == "accuracy", sync_dist=False)
