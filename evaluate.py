"""Evaluate a GPT-2: `python evaluate.py init=openai_124m task=hellaswag` (see README.md, Evaluation)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gpt_lightning.errors import main_guard

# conf/evaluate.yaml: the run folder is output_dir when given, else a dated one
OmegaConf.register_new_resolver("or_else", lambda value, default: default if value is None else value, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from gpt_lightning.evaluation.app import run

    main_guard(lambda: run(cfg, HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
