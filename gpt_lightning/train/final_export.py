"""The export folder at the end of a training run (weights/export.py writes it): the full
weights gathered from every rank, LoRA merged, and the card's facts from the run's callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from gpt_lightning.lora import merge_lora_state
from gpt_lightning.model import GPT, GPTConfig
from gpt_lightning.train.callbacks import LossHistory, RunRecord, find
from gpt_lightning.weights.export import completed_epochs, sampling, write_export
from gpt_lightning.weights.model_card import card_facts


def export_model(trainer, module, folder: Path, extra_results: Mapping | None = None,
                 chat_template: str | None = None) -> Path | None:
    """Gather the full weights (works under DDP and FSDP), merge LoRA, write the whole folder.

    Every rank must call it (the gather is collective under FSDP); rank 0 writes.
    """
    state = trainer.strategy.lightning_module_state_dict()
    if not trainer.is_global_zero:
        return None
    weights = {k.removeprefix("model."): v.detach().cpu() for k, v in state.items() if k.startswith("model.")}
    weights = merge_lora_state(weights)  # LoRA updates folded into plain weights
    model = GPT(GPTConfig.from_dict(module.model.config.to_dict()))
    model.load_state_dict(weights)
    record, history = find(trainer, RunRecord), find(trainer, LossHistory)
    history = history.state_dict() if history is not None else None
    record_state = record.state_dict() if record is not None else None
    facts = card_facts(model_config=model.config.to_dict(), params=model.num_params(), record=record_state,
                       history=history, global_step=trainer.global_step, tokens_seen=module.tokens_seen,
                       epoch=epochs_completed(trainer), extra_results=extra_results, source="this run")
    return write_export(model, folder, facts, history, sampling=sampling(record_state), chat_template=chat_template,
                        key="hydra.run.dir")



def epochs_completed(trainer) -> int:
    """Epochs whose batches all ran (weights/export.py ``completed_epochs``)."""
    loop = trainer.fit_loop
    return completed_epochs(loop.epoch_progress.current.processed, loop.epoch_progress.current.started,
                            loop.epoch_loop.batch_progress.is_last_batch)
