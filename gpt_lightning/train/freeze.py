"""``finetune.trainable_blocks``: train only the last N blocks, the final LayerNorm and the head.

"LLMs from scratch" chapter 6 trains the last block, the final LayerNorm and the new
classification head of GPT-2 124M (7.1M of 124M numbers with the head). The head is
``score`` for classification; for the language-model tasks it is ``lm_head``, which GPT-2
ties to the token embedding, so there the token table trains too (``model.tie_embeddings``).
"""

from __future__ import annotations

import logging

import lightning as L
import torch.nn as nn
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPT

log = logging.getLogger("gpt_lightning")


def freeze_blocks(model: GPT, trainable_blocks: int | None) -> GPT:
    """Freeze all but the last ``trainable_blocks`` blocks, ``ln_f`` and the head; None: train all."""
    if trainable_blocks is None:
        return model
    n = model.config.n_layers
    if trainable_blocks > n:
        raise bad_value("finetune.trainable_blocks", trainable_blocks,
                        f"at most the model's {n} blocks (null trains them all)")
    for p in model.parameters():
        p.requires_grad_(False)
    keep: list[nn.Module] = list(model.blocks)[n - trainable_blocks:] + [model.ln_f]
    keep.append(model.score if hasattr(model, "score") else model.lm_head)
    for module in keep:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trained numbers, all numbers), each shared tensor counted once."""
    seen, trained, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trained += p.numel() if p.requires_grad else 0
    return trained, total


class TrainableParams(L.Callback):
    """Prints, logs (``params/trainable``, ``params/total``) and reports how many numbers train."""

    def __init__(self) -> None:
        self.summary: dict = {}

    def results(self) -> dict:
        """For result.json and the model card (train/callbacks: ``results``)."""
        return self.summary

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        trained, total = count_trainable(pl_module.model)
        self.summary = {"trainable_params": trained}
        self._counts = (trained, total)
        _announce(trained, total)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # Once per run, at step 0: a resumed run (restored by now) logged them when it started, and
        # a row at step 0 would make a resumed CSV log drop the rows before its checkpoint.
        if trainer.global_step == 0:
            trained, total = self._counts
            for logger in trainer.loggers:
                logger.log_metrics({"params/trainable": float(trained), "params/total": float(total)}, step=0)


@rank_zero_only
def _announce(trained: int, total: int) -> None:
    if trained == total:  # nothing frozen: ParameterSummary's line already says it
        return
    line = f"training {trained:,} of {total:,} parameters ({100 * trained / max(total, 1):.2f}%)"
    log.info(line)  # on the console too (Hydra's log handler), and in the run's log file
