"""Pretrain a GPT-2: `python train.py` (see conf/train.yaml and README.md)."""

from gpt_lightning.cli.hydra_adapter import train as main

if __name__ == "__main__":
    main()
