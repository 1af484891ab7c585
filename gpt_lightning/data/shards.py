"""The prepared copy of a corpus: shards of uint16 token ids and the manifest that describes them.

A prepared corpus is one folder, ``<data.cache>/corpora/<key>/``::

    manifest.json        written last: its presence means the copy is complete (see below)
    train_000000.bin     raw little-endian uint16 ids, no header, ``data.shard_tokens`` ids each
    train_000001.bin     (the last shard of a stream holds the rest)
    ...
    val_000000.bin       held-out documents (data.val_split=documents), same layout
    train_000002.bin.part  while preparing only: the shard being filled
    progress.json        while preparing only: the finished shards, the parts' lengths, the next unit
    .lock                while preparing only: who prepares (host, pid), refreshed every few seconds

Every document is followed by ``<|endoftext|>`` (50256); a document may continue from one shard
into the next (shards are a fixed number of tokens, as build-nanogpt's and llm.c's are), and
training windows are drawn across shard boundaries. ``manifest.json`` holds::

    format, dtype, tokenizer, eot_id          how to read the ids
    key                                       the folder's name: a hash of identity + settings
    source                                    the files (path, size, mtime_ns, sha256) or the hub dataset
    settings                                  text_column, shard_tokens, val_split, val_fraction,
                                              shuffle_documents, seed
    train, val                                one entry per shard: file, tokens, documents
                                              (documents that end in the shard)
    totals                                    tokens and documents per stream; seconds taken

The key is computed from what identifies the source without reading it (file paths, sizes and
modification times; a hub dataset's name, config, split, revision) and from the settings, so a
start or a requeue finds its prepared copy with a few ``stat`` calls and reads no corpus byte.
``data.verify=true`` also re-hashes every file and compares with the manifest.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from gpt_lightning.errors import ConfigError

FORMAT = "gpt_lightning.shards/1"
MANIFEST, PROGRESS, LOCK = "manifest.json", "progress.json", ".lock"
DTYPE = np.uint16
STREAMS = ("train", "val")


def shard_name(stream: str, index: int) -> str:
    return f"{stream}_{index:06d}.bin"


def corpus_key(identity: dict, settings: dict) -> str:
    """A short hash of what identifies the source and of the settings that change the ids."""
    blob = json.dumps({"format": FORMAT, "identity": identity, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return None
    return manifest if manifest.get("format") == FORMAT else None


def check_shards(folder: Path, manifest: dict) -> None:
    """Every shard the manifest lists is there with the size it says (no byte is read)."""
    for stream in STREAMS:
        for entry in manifest.get(stream, []):
            path = Path(folder) / entry["file"]
            want = entry["tokens"] * np.dtype(DTYPE).itemsize
            have = path.stat().st_size if path.is_file() else None
            if have != want:
                raise ConfigError(f"the prepared corpus in {folder} is damaged: {entry['file']} has "
                                  f"{have if have is not None else 'no'} bytes, the manifest says {want}; delete "
                                  "the folder and prepare again (python prepare.py ...)")


class TokenStream:
    """The shards of one stream as one sequence of ids, memory-mapped lazily.

    ``read(a, n)`` returns ids ``a .. a+n`` even across shard boundaries. Each shard is opened
    on first use, so a DataLoader worker maps only what it reads, after it was forked.
    """

    def __init__(self, folder: Path, entries: list[dict]) -> None:
        self.files = [str(Path(folder) / e["file"]) for e in entries]
        self.starts = [0]
        for e in entries:
            self.starts.append(self.starts[-1] + int(e["tokens"]))
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:  # DataLoader workers get the paths, not the open maps
        return {**self.__dict__, "_maps": {}}

    def _shard(self, i: int) -> np.memmap:
        m = self._maps.get(i)
        if m is None:
            m = self._maps[i] = np.memmap(self.files[i], dtype=DTYPE, mode="r")
        return m

    def read(self, a: int, n: int) -> np.ndarray:
        if a < 0 or a + n > len(self):
            raise IndexError(f"ids {a}..{a + n} outside 0..{len(self)}")
        i = bisect.bisect_right(self.starts, a) - 1
        if a + n <= self.starts[i + 1]:  # inside one shard: a view, no copy
            off = a - self.starts[i]
            return self._shard(i)[off:off + n]
        parts, need = [], n
        while need > 0:
            off = a - self.starts[i]
            take = min(need, self.starts[i + 1] - a)
            parts.append(self._shard(i)[off:off + take])
            a, need, i = a + take, need - take, i + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def shard_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).glob("*_??????.bin"))


def remove_partial(folder: Path, keep: set[str]) -> None:
    """Delete shard files and temporaries that ``progress.json`` does not list as finished."""
    for p in Path(folder).iterdir():
        if p.name.endswith(".tmp") or (p.name.endswith((".bin", ".part")) and p.name not in keep):
            try:
                os.remove(p)
            except OSError:
                pass


def summary(folder: Path, manifest: dict) -> str:
    t = manifest["totals"]
    return (f"prepared {folder}: {t['train_tokens']:,} training tokens ({t['train_documents']:,} documents) in "
            f"{len(manifest['train'])} shards, {t['val_tokens']:,} held-out tokens ({t['val_documents']:,} documents) "
            f"in {len(manifest['val'])}")
