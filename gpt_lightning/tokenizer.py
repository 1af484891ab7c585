"""GPT-2 BPE through tiktoken, with one clear error when its files cannot be fetched."""

from __future__ import annotations

import functools
import os
from typing import Iterable, Sequence

from gpt_lightning.errors import ConfigError

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256
IGNORE_INDEX = -100  # a target id the loss skips (torch cross-entropy's ignore_index)
BPE_FILES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
)
# sha256 of each file, as tiktoken pins them (tiktoken_ext/openai_public.py)
BPE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


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


def bpe_file(name: str):
    """GPT-2's ``vocab.bpe`` or ``encoder.json`` where tiktoken caches it (``TIKTOKEN_CACHE_DIR``,
    else ``DATA_GYM_CACHE_DIR``, else <tmp>/data-gym-cache; file named by the sha1 of its URL),
    downloaded there, verified, if it is missing. These are the files the tokenizer reads."""
    import hashlib
    import tempfile
    from pathlib import Path

    from gpt_lightning.download import Source, cache_dir, download

    url = next(u for u in BPE_FILES if u.endswith("/" + name))
    folder = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if folder is None:
        folder = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    elif folder == "":  # tiktoken's caching is off: keep our own copy
        folder = str(cache_dir() / "tiktoken")
    path = Path(folder) / hashlib.sha1(url.encode()).hexdigest()
    try:
        return download(Source(url, BPE_SHA256[name]), path, progress=False)
    except ConfigError as err:
        raise ConfigError(f"cannot get the GPT-2 tokenizer file {name}: {err}") from None
