"""GPT-2 BPE through tiktoken, with one clear error when its files cannot be fetched."""

from __future__ import annotations

import functools
import os
from typing import Iterable, Sequence

from .errors import ConfigError

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
BPE_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)


class Tokenizer:
    """GPT-2 byte-level BPE. ``<|endoftext|>`` in text is the end-of-text token (50256)."""

    def __init__(self) -> None:
        self._enc = _load_gpt2_encoding()
        self.eot_id = self._enc.eot_token
        self.vocab_size = self._enc.n_vocab  # 50257

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special={EOT_TOKEN})

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        return self._enc.encode_batch(list(texts), num_threads=num_threads, allowed_special={EOT_TOKEN})

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes; streaming output decodes these incrementally so UTF-8 is never split."""
        return self._enc.decode_bytes(list(ids))


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    return Tokenizer()


def _load_gpt2_encoding():
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # tiktoken raises requests/urllib errors when offline
        cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
        raise ConfigError(
            "cannot load the GPT-2 BPE files ("
            f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}). "
            f"tiktoken downloads {BPE_FILES[0]} and {BPE_FILES[1]} on first use; without internet, "
            "put them in a folder under tiktoken's cache names (the sha1 of each URL) and set "
            f"TIKTOKEN_CACHE_DIR to it (now: {cache})"
        ) from None
