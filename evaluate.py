"""Evaluate a GPT-2: `python evaluate.py init=openai_124m task=hellaswag` (see README.md, Evaluation)."""

import hydra
from omegaconf import DictConfig

from gpt_lightning.cli import hydra_adapter as hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    hydra_app.run(cfg, hydra_app.evaluate_job)


if __name__ == "__main__":
    main()
