"""Generate text with a GPT-2: `python generate.py init=openai_124m prompt="..."` (see README.md)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.cli import hydra_adapter as hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    hydra_app.run(cfg, hydra_app.generate_job)


if __name__ == "__main__":
    main()
