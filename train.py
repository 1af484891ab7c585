"""Pretrain a GPT-2: `python train.py` (see conf/train.yaml and README.md)."""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from gpt_lightning.errors import main_guard
from gpt_lightning.pipeline import build_model, check_lengths, fit


def run(cfg: DictConfig) -> dict:
    model = build_model(cfg)
    check_lengths(model, cfg.data.max_length)
    return fit(cfg, instantiate(cfg.data), model)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    return main_guard(lambda: run(cfg))


if __name__ == "__main__":
    main()
