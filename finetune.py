"""Instruction-tune a GPT-2: `python finetune.py init=openai_355m` (see conf/finetune.yaml)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.cli import hydra_adapter as hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
def main(cfg: DictConfig):
    return hydra_app.run(cfg, hydra_app.train_job)


if __name__ == "__main__":
    main()
