"""Tokenize a pretraining corpus once into shards: `python prepare.py data=corpus data.path=...`
(see conf/prepare.yaml and docs/data.md). train.py with the same data keys finds the copy."""

from gpt_lightning.cli.hydra_adapter import prepare_main as main

if __name__ == "__main__":
    main()
