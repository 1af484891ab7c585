"""Generate text with a GPT-2: `python generate.py init=openai_124m prompt="..."` (see README.md)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.errors import main_guard
from gpt_lightning.generate_app import run


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    main_guard(lambda: run(cfg))


if __name__ == "__main__":
    main()
