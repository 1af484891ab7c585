"""gpt_lightning: train, fine-tune and sample GPT-2-class models with Lightning and Hydra."""

from gpt_lightning.errors import ConfigError
from gpt_lightning.weights.hf_io import load_pretrained, save_pretrained
from gpt_lightning.model import GPT, SIZES, GPTConfig, KVCache
from gpt_lightning.tokenizer import Tokenizer, get_tokenizer

__all__ = ["GPT", "GPTConfig", "KVCache", "SIZES", "ConfigError", "Tokenizer", "get_tokenizer",
           "load_pretrained", "save_pretrained", "run_training"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``run_training`` (train/job.py) is imported on first use: it brings Lightning along."""
    if name == "run_training":
        from gpt_lightning.train.job import run_training

        return run_training
    raise AttributeError(f"module 'gpt_lightning' has no attribute {name!r}")
