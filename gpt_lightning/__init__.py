"""gpt_lightning: train, fine-tune and sample GPT-2-class models with Lightning and Hydra."""

from .errors import ConfigError
from .hf_io import load_pretrained, save_pretrained
from .model import GPT, SIZES, GPTConfig, KVCache
from .tokenizer import Tokenizer, get_tokenizer

__all__ = ["GPT", "GPTConfig", "KVCache", "SIZES", "ConfigError", "Tokenizer", "get_tokenizer",
           "load_pretrained", "save_pretrained"]
__version__ = "0.1.0"
