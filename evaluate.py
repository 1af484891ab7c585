"""Evaluate a GPT-2: `python evaluate.py init=openai_124m task=hellaswag` (see README.md, Evaluation)."""

from gpt_lightning.cli.hydra_adapter import evaluate as main

if __name__ == "__main__":
    main()
