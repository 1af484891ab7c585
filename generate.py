"""Generate text with a GPT-2: `python generate.py init=openai_124m prompt="..."` (see README.md)."""

from gpt_lightning.cli.hydra_adapter import generate as main

if __name__ == "__main__":
    main()
