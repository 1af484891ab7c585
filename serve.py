"""Serve a GPT-2 with an OpenAI-compatible API: `python serve.py init=checkpoint init.path=<export>` (see README.md)."""

from gpt_lightning.cli.hydra_adapter import serve as main

if __name__ == "__main__":
    main()
