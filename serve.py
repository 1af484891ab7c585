"""Serve a GPT-2 with an OpenAI-compatible API: `python serve.py init=checkpoint init.path=<export>` (see README.md)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.cli import hydra_adapter as hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    hydra_app.run(cfg, hydra_app.serve_job)


if __name__ == "__main__":
    main()
