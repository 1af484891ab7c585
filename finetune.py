"""Instruction-tune a GPT-2: `python finetune.py init=openai_355m` (see conf/finetune.yaml)."""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpt_lightning.callbacks import log_text_table
from gpt_lightning.lora import apply_lora
from gpt_lightning.errors import main_guard
from gpt_lightning.pipeline import build_model, check_lengths, fit
from gpt_lightning.responses import write_responses


def run(cfg: DictConfig) -> dict:
    model = build_model(cfg)
    lora = cfg.finetune.lora
    if lora.rank:
        apply_lora(model, lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets))
    datamodule = instantiate(cfg.data)
    if datamodule.max_length is None:
        datamodule.max_length = model.config.context_length
    check_lengths(model, datamodule.max_length)

    def after_fit(trainer, module, out):
        if not cfg.responses.enabled:
            return {}
        path = out / cfg.responses.file if trainer.is_global_zero else None  # every rank generates, rank 0 writes
        summary = module.on_every_rank(write_responses, datamodule.test_records, datamodule.template, path,
                                       max_new_tokens=cfg.responses.max_new_tokens,
                                       batch_size=cfg.responses.batch_size, device=trainer.strategy.root_device)
        if path is not None:
            log_text_table(trainer, "responses", path, limit=10)
        return summary

    return fit(cfg, datamodule, model, after_fit=after_fit)


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg: DictConfig):
    return main_guard(lambda: run(cfg))


if __name__ == "__main__":
    main()
