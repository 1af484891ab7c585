"""Pretrain a GPT-2: `python train.py` (see conf/train.yaml and README.md)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.cli import hydra_adapter as hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    return hydra_app.run(cfg, hydra_app.train_job)


if __name__ == "__main__":
    main()
