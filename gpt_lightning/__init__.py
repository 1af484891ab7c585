"""gpt_lightning: train, fine-tune and sample GPT-2-class models with Lightning and Hydra."""

from gpt_lightning.errors import ConfigError
from gpt_lightning.weights.hf_io import load_pretrained, save_pretrained
from gpt_lightning.model import GPT, SIZES, GPTConfig, KVCache
from gpt_lightning.tokenizer import Tokenizer, get_tokenizer

__all__ = ["GPT", "GPTConfig", "KVCache", "SIZES", "ConfigError", "Tokenizer", "get_tokenizer",
           "load_pretrained", "save_pretrained"]
__version__ = "0.1.0"
