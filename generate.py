"""Generate text with a GPT-2: `python generate.py init=openai_124m prompt="..."` (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from gpt_lightning.errors import ConfigError
from gpt_lightning.generate_app import run


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
