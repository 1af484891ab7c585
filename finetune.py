"""Instruction-tune a GPT-2: `python finetune.py init=openai_355m` (see conf/finetune.yaml)."""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpt_lightning.callbacks import log_text_table
from gpt_lightning.evaluation.judge import judge_after_fit, judge_settings
from gpt_lightning.lora import apply_lora
from gpt_lightning.errors import main_guard
from gpt_lightning.pipeline import build_model, check_lengths, fit
from gpt_lightning.responses import write_responses


def run(cfg: DictConfig) -> dict:
    judge = judge_settings(cfg)  # judge.enabled=true: checked before any weights are loaded
    model = build_model(cfg)
    lora = cfg.finetune.lora
    if lora.rank:
        apply_lora(model, lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets))
    datamodule = instantiate(cfg.data)
    if datamodule.max_length is None:
        datamodule.max_length = model.config.context_length
    check_lengths(model, datamodule.max_length)

    def after_fit(trainer, module, out):
        if not cfg.responses.enabled or not trainer.is_global_zero:
            return {}
        summary = write_responses(module.model, datamodule.test_records, datamodule.template,
                                  out / cfg.responses.file, max_new_tokens=cfg.responses.max_new_tokens,
                                  batch_size=cfg.responses.batch_size, device=trainer.strategy.root_device)
        log_text_table(trainer, "responses", out / cfg.responses.file, limit=10)
        if judge is not None:
            summary.update(judge_after_fit(trainer, out / cfg.responses.file, judge, out / "judge.jsonl"))
        return summary

    return fit(cfg, datamodule, model, after_fit=after_fit)


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg: DictConfig):
    return main_guard(lambda: run(cfg))


if __name__ == "__main__":
    main()
