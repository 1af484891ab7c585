"""Lightning data modules: sliding-window pretraining text and instruction records."""

from gpt_lightning.tokenizer import IGNORE_INDEX  # noqa: F401  (where the data modules take it from)
