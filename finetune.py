"""Instruction-tune a GPT-2: `python finetune.py init=openai_355m` (see conf/finetune.yaml)."""

from gpt_lightning.cli.hydra_adapter import finetune as main

if __name__ == "__main__":
    main()
