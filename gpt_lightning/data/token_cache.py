"""Tokenize text corpora once into a memory-mapped file of uint16 token ids.

The cache file is named by a hash of the files' contents and of the tokenizer, so a
changed file or tokenizer makes a new cache and an unchanged one is reused. Tokenizing
streams each file in blocks (memory does not grow with the corpus) split where GPT-2's
pre-tokenizer splits anyway: just before a newline that is followed by a non-space
character (its regex ends a whitespace run one character early there, and that last
newline stands alone), so the ids equal those of tokenizing each file whole. tiktoken encodes the pieces of a
block on several threads. Files are joined with ``<|endoftext|>``.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from gpt_lightning.atomic import atomic_write, remove_stale_tmp
from gpt_lightning.errors import ConfigError
from gpt_lightning.progress import byte_progress
from gpt_lightning.tokenizer import get_tokenizer

TOKENIZER_ID = "tiktoken-gpt2"  # part of the cache key
BLOCK_BYTES = 1 << 20  # read this much text per step
PIECE_CHARS = 64 << 10  # and hand tiktoken pieces of about this size
_SAFE_SPLIT = re.compile(r"\n(?=\S)")


def expand_paths(spec: str | os.PathLike | list) -> list[Path]:
    """A file, a folder (every file below it, sorted) or a glob; a list of any of these."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    files: list[Path] = []
    for item in specs:
        item = os.path.expanduser(str(item))
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not found:
            raise ConfigError(f"data.path={item!r} matches no file (give a file, a folder or a glob)")
        files.extend(found)
    return files


def corpus_key(files: list[Path]) -> str:
    """A hash of every file's bytes (in order) and of the tokenizer."""
    h = hashlib.sha256(TOKENIZER_ID.encode())
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0file\0")
    return h.hexdigest()[:24]


def tokenize_to_cache(files: list[Path], cache_dir: Path, progress: bool = True) -> Path:
    """Return the ``.bin`` of uint16 ids for ``files``, tokenizing only on a cache miss."""
    key = corpus_key(files)
    target = Path(cache_dir) / f"{key}.bin"
    meta = target.with_suffix(".json")
    if target.is_file() and meta.is_file():
        return target
    remove_stale_tmp(target.parent)  # left by tokenizers that were killed
    tok = get_tokenizer()
    if tok.vocab_size > np.iinfo(np.uint16).max + 1:
        raise ConfigError(f"a vocabulary of {tok.vocab_size} does not fit uint16 token files")
    total_bytes = sum(p.stat().st_size for p in files)
    counts = {}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as out, byte_progress(total_bytes, "tokenizing", progress) as bar:
            for i, path in enumerate(files):
                if i:
                    out.write(np.array([tok.eot_id], dtype=np.uint16).tobytes())
                counts[str(path)] = _tokenize_file(path, tok, out, bar)

    hint = "point data.cache (or GPT_LIGHTNING_CACHE) at a writable folder"
    atomic_write(target, write, hint=hint)
    info = {"files": [str(p) for p in files], "tokens_per_file": counts, "tokenizer": TOKENIZER_ID,
            "num_tokens": os.path.getsize(target) // 2}
    atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1)), hint=hint)
    return target


def _tokenize_file(path: Path, tok, out, bar) -> int:
    """Stream one UTF-8 file through the tokenizer into ``out``; return its token count."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    carry, offset, n_tokens, n_chars = "", 0, 0, 0
    with open(path, "rb") as fh:
        while True:
            raw = fh.read(BLOCK_BYTES)
            final = not raw
            try:
                text = carry + decoder.decode(raw, final=final)
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path} is not UTF-8 text (bad byte at offset {offset + err.start}); "
                                  "convert it to UTF-8 or remove it from data.path") from None
            offset += len(raw)
            pieces, carry = _split_safely(text, final)
            for ids in tok.encode_batch(pieces) if pieces else ():  # pieces on several threads
                out.write(np.asarray(ids, dtype=np.uint16).tobytes())
                n_tokens += len(ids)
            n_chars += sum(map(len, pieces))
            bar.update(len(raw))
            if final:
                break
    if n_tokens == 0 or not n_chars:
        raise ConfigError(f"{path} is empty; give data.path a file with text in it")
    return n_tokens


def _split_safely(text: str, final: bool) -> tuple[list[str], str]:
    """Cut ``text`` into pieces of about PIECE_CHARS at safe boundaries.

    Returns the pieces and the tail that must wait for more text (empty when ``final``).
    """
    pieces, start = [], 0
    while len(text) - start > PIECE_CHARS:
        m = _SAFE_SPLIT.search(text, start + PIECE_CHARS)
        if m is None:
            break
        pieces.append(text[start:m.start()])
        start = m.start()
    tail = text[start:]
    if final:
        return pieces + ([tail] if tail else []), ""
    # keep the tail for the next block unless it is huge with no safe boundary in it
    if len(tail) > 16 * PIECE_CHARS:
        cut = _last_safe_split(tail)
        if cut:
            return pieces + [tail[:cut]], tail[cut:]
    return pieces, tail


def _last_safe_split(text: str) -> int:
    last = 0
    for m in _SAFE_SPLIT.finditer(text, 1):
        last = m.start()
    return last


def load_tokens(path: Path) -> np.memmap:
    return np.memmap(path, dtype=np.uint16, mode="r")
