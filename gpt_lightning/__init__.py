"""gpt_lightning: train, fine-tune and sample GPT-2-class models with Lightning and Hydra."""

from gpt_lightning.errors import ConfigError

__all__ = ["GPT", "GPTConfig", "KVCache", "SIZES", "ConfigError", "Tokenizer", "get_tokenizer",
           "load_pretrained", "save_pretrained", "run_training"]
__version__ = "0.1.0"

# The names below import torch (run_training: Lightning too); they load on first use, so that
# modules without torch (corpus preparation, `python prepare.py`, its worker processes) start fast.
_LAZY = {"load_pretrained": "gpt_lightning.weights.hf_io", "save_pretrained": "gpt_lightning.weights.hf_io",
         "GPT": "gpt_lightning.model", "SIZES": "gpt_lightning.model", "GPTConfig": "gpt_lightning.model",
         "KVCache": "gpt_lightning.model", "Tokenizer": "gpt_lightning.tokenizer",
         "get_tokenizer": "gpt_lightning.tokenizer", "run_training": "gpt_lightning.train.job"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpt_lightning' has no attribute {name!r}")
