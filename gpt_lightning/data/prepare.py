"""Tokenize a corpus once into shards (``data/shards.py``), on every core, resumably.

    python prepare.py data=corpus data.path='fineweb/*.parquet'
    python prepare.py experiment=gpt2_124m_fineweb

The same data config as ``train.py`` drives it, so ``train.py`` with the same keys finds the
prepared copy (and prepares it itself on first use when nobody did).

How it works: the source is cut into units (``data/sources.py``); a pool of processes (one per
core by default, ``data.prepare_workers``) tokenizes units with tiktoken's ``encode_ordinary``
(through ``encode_to_numpy``: no Python list of ids), appending ``<|endoftext|>`` to each
document and setting aside the held-out documents; the parent writes the results, in unit
order, into fixed-size shards. Memory is bounded by the units in flight, not the corpus.

Resumable: after each unit that finished a shard (and at least every ``SAVE_EVERY_S``), the
open shards are flushed and ``progress.json`` records the finished shards, the length of each
shard being filled (``.part``) and the next unit; a rerun after a kill keeps all that, cuts
the parts back to the recorded length and goes on from that unit. ``manifest.json`` is written
last. Once per corpus: a ``.lock`` file (created with O_EXCL, refreshed while preparing)
makes other processes, on this node or another one sharing the cache, wait for the manifest
instead of preparing too; a lock nobody refreshed for ``STALE_LOCK_S`` is taken over.

A process pool and the shard writer are hand-written (about 150 lines): ``datasets.map`` would
tokenize in parallel too, but writes Arrow tables of Python-int lists (several times the size
of uint16 shards, and a second pass to convert), and has no resumable shard output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import socket
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gpt_lightning.atomic import atomic_write
from gpt_lightning.data import shards as S
from gpt_lightning.data import sources
from gpt_lightning.data.sources import TEXT, HubSpec, file_identity, file_sha256, file_units
from gpt_lightning.data.sources import hub_units, list_files, read_unit
from gpt_lightning.errors import ConfigError

log = logging.getLogger("gpt_lightning")
TOKENIZER_ID = "tiktoken-gpt2"
EOT = 50256
STALE_LOCK_S = 120.0  # a .lock not refreshed for this long belongs to a dead preparer
HEARTBEAT_S = 10.0
SAVE_EVERY_S = 60.0  # progress.json is also written this often (a kill loses at most this much work)


# ---- what is prepared ------------------------------------------------------------------------------
def settings_of(text_column: str, shard_tokens: int, val_split: str, val_fraction: float,
                shuffle_documents: bool, seed: int) -> dict:
    """The settings that change the prepared ids (part of the key)."""
    held_out = val_split == "documents"
    return {"text_column": text_column, "shard_tokens": shard_tokens, "val_split": val_split,
            "val_fraction": val_fraction if held_out else None,
            "shuffle_documents": shuffle_documents,
            "seed": seed if (held_out or shuffle_documents) else None,
            "unit_bytes": sources.UNIT_BYTES, "tokenizer": TOKENIZER_ID}


def identity_of(files: list[Path] | None, hub: HubSpec | None) -> dict:
    if hub is not None:
        return {"hub": asdict(hub)}
    return {"files": file_identity(files)}


def find_prepared(cache: Path, identity: dict, settings: dict, verify: bool = False) -> tuple[Path, dict | None]:
    """(folder, manifest or None): the prepared copy's folder and its manifest if complete."""
    folder = Path(cache) / "corpora" / S.corpus_key(identity, settings)
    manifest = S.read_manifest(folder)
    if manifest is not None:
        S.check_shards(folder, manifest)
        if verify:
            _verify(manifest)
    return folder, manifest


def _verify(manifest: dict) -> None:
    for entry in manifest["source"].get("files", []):
        digest = file_sha256(entry["path"])
        if digest != entry.get("sha256"):
            raise ConfigError(f"{entry['path']} changed since it was prepared (sha256 {digest[:12]}..., the manifest "
                              f"says {str(entry.get('sha256'))[:12]}...) although its size and time did not; "
                              "touch the file (or delete the prepared folder) to prepare again")


# ---- the worker -------------------------------------------------------------------------------------
_ENC = None


def _encoder():
    global _ENC
    if _ENC is None:
        from gpt_lightning.tokenizer import _load_gpt2_encoding

        _ENC = _load_gpt2_encoding()
    return _ENC


def tokenize_unit(job: tuple) -> tuple:
    """(unit index, train ids, val ids, documents) for one unit; ids are uint16, each document
    followed by EOT. Documents are held out with probability ``val_fraction`` each, drawn
    from a generator seeded by (seed, unit), so the choice does not depend on the schedule."""
    unit, column, hub, val_fraction, shuffle, seed = job
    enc = _encoder()
    encode = enc.encode_to_numpy
    eot = np.array([EOT], dtype=np.uint16)
    rng = np.random.default_rng([seed, unit.index])
    out = {False: [], True: []}  # held out? -> arrays
    pending: list[np.ndarray] = []  # pieces of a text document not yet ended
    documents = 0
    pieces = read_unit(unit, column, hub)
    if shuffle and unit.kind != TEXT:
        docs = [p for p in pieces]
        order = np.random.default_rng([seed, unit.index, 1]).permutation(len(docs))
        pieces = (docs[i] for i in order)
    for text, ends in pieces:
        if text:
            pending.append(encode(text, allowed_special=set(), disallowed_special=()).astype(np.uint16))
        if ends:
            held = bool(val_fraction) and rng.random() < val_fraction
            target = out[held]
            target.extend(pending)
            target.append(eot)
            pending = []
            documents += 1
    if pending:  # a text unit that does not end its file: its document goes on in the next unit
        out[False].extend(pending)
    cat = lambda arrays: np.concatenate(arrays) if arrays else np.empty(0, np.uint16)
    return unit.index, cat(out[False]), cat(out[True]), documents


# ---- the writer ------------------------------------------------------------------------------------
class ShardWriter:
    """Appends one stream's ids to fixed-size shards, and can say where it is (for a resume).

    The shard being filled is ``<stream>_<index>.bin.part``; full, it is renamed to its final
    name. ``state()`` flushes it to disk and returns the finished shards and the part's length;
    a writer built from that state truncates the part to that length and goes on.
    """

    def __init__(self, folder: Path, stream: str, shard_tokens: int, state: dict | None) -> None:
        self.folder, self.stream, self.shard_tokens = folder, stream, shard_tokens
        state = state or {"shards": [], "open_tokens": 0, "open_documents": 0}
        self.shards = list(state["shards"])
        self._n, self._docs = int(state["open_tokens"]), int(state["open_documents"])
        self._fh = None
        if self._n:
            part = self._part()
            if not part.is_file() or part.stat().st_size < self._n * 2:
                raise ConfigError(f"{part} is shorter than {S.PROGRESS} says; delete {self.folder} and prepare again")
            self._fh = open(part, "r+b")
            self._fh.truncate(self._n * 2)
            self._fh.seek(self._n * 2)
        self.finished = False  # a shard was finished since the last state()

    def files(self) -> set[str]:
        return {e["file"] for e in self.shards} | ({self._part().name} if self._n else set())

    def _part(self) -> Path:
        return self.folder / (S.shard_name(self.stream, len(self.shards)) + ".part")

    def add(self, ids: np.ndarray) -> None:
        while len(ids):
            if self._fh is None:
                self._fh = open(self._part(), "wb")
                self._n = self._docs = 0
            take = min(len(ids), self.shard_tokens - self._n)
            chunk = ids[:take]
            self._fh.write(chunk.tobytes())
            self._n += take
            self._docs += int(np.count_nonzero(chunk == EOT))
            ids = ids[take:]
            if self._n == self.shard_tokens:
                self._finish()

    def _finish(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        name = S.shard_name(self.stream, len(self.shards))
        os.replace(self._part(), self.folder / name)
        self.shards.append({"file": name, "tokens": self._n, "documents": self._docs})
        self._n = self._docs = 0
        self.finished = True

    def state(self) -> dict:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self.finished = False
        return {"shards": self.shards, "open_tokens": self._n, "open_documents": self._docs}

    def close(self) -> None:
        """Finish the last, shorter shard (a stream without ids has no shard)."""
        if self._fh is not None and self._n:
            self._finish()
        elif self._fh is not None:
            self._fh.close()
            os.remove(self._part())
            self._fh = None


# ---- the lock -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def preparer_lock(folder: Path, progress: bool = True):
    """Yield True holding the folder's lock, or False once another preparer finished it."""
    path = folder / S.LOCK
    me = f"{socket.gethostname()} pid {os.getpid()}"
    told = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.write(fd, me.encode())
            os.close(fd)
            break
        except FileExistsError:
            if S.read_manifest(folder) is not None:
                yield False
                return
            try:
                age = time.time() - path.stat().st_mtime
                holder = path.read_text()[:100]
            except OSError:
                continue  # released meanwhile
            if age > STALE_LOCK_S:
                log.warning("taking over the preparation of %s from %s (its lock is %.0f s old)", folder, holder, age)
                with contextlib.suppress(OSError):
                    os.remove(path)
                continue
            if not told and progress:
                print(f"waiting for {holder} to finish preparing {folder}", file=sys.stderr, flush=True)
                told = True
            time.sleep(1.0)
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield True
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError):
            os.remove(path)


# ---- preparing ------------------------------------------------------------------------------------------
def prepare(*, cache: Path, path=None, hub: HubSpec | None = None, text_column: str = "text",
            shard_tokens: int = 100_000_000, val_split: str = "documents", val_fraction: float = 0.01,
            shuffle_documents: bool = False, seed: int = 0, workers: int | None = None,
            progress: bool = True, verify: bool = False) -> tuple[Path, dict]:
    """Prepare the corpus unless a complete copy exists; return (folder, manifest)."""
    files = None if hub is not None else list_files(path)
    identity = identity_of(files, hub)
    settings = settings_of(text_column, shard_tokens, val_split, val_fraction, shuffle_documents, seed)
    folder, manifest = find_prepared(cache, identity, settings, verify)
    if manifest is not None:
        return folder, manifest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {folder} ({err.strerror}); point data.cache (or GPT_LIGHTNING_CACHE) "
                          "at a writable folder") from None
    with preparer_lock(folder, progress) as mine:
        manifest = S.read_manifest(folder)
        if not mine or manifest is not None:
            return folder, manifest
        manifest = _prepare_locked(folder, files, hub, identity, settings, workers, progress)
    return folder, manifest


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _prepare_locked(folder: Path, files, hub, identity, settings, workers, progress) -> dict:
    started = time.time()
    state_file = folder / S.PROGRESS
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("settings") != settings or state.get("identity") != identity:
        state = {}
    S.remove_partial(folder, keep={f for s in S.STREAMS for f in _files_of(s, state.get(s))})
    writers = {s: ShardWriter(folder, s, settings["shard_tokens"], state.get(s)) for s in S.STREAMS}
    units = hub_units(hub) if hub is not None else file_units(files)
    order = list(range(len(units)))
    if settings["shuffle_documents"]:
        order = [int(i) for i in np.random.default_rng([settings["seed"], 2]).permutation(len(units))]
    start = int(state.get("next_unit", 0))
    val_fraction = settings["val_fraction"] or 0.0
    jobs = [(units[order[p]], settings["text_column"], hub, val_fraction, settings["shuffle_documents"],
             settings["seed"] or 0) for p in range(start, len(order))]
    n_workers = max(1, min(workers or default_workers(), len(jobs) or 1))
    docs = state.get("documents", 0)
    tokens = before = sum(e["tokens"] for w in writers.values() for e in w.shards)
    if start:
        log.info("resuming the preparation of %s at unit %d of %d", folder, start, len(units))

    saved = time.time()

    def save(next_unit: int):  # after a whole unit: every stream is at the same place
        info = {"identity": identity, "settings": settings, "documents": docs, "next_unit": next_unit,
                **{s: w.state() for s, w in writers.items()}}
        atomic_write(state_file, lambda tmp: Path(tmp).write_text(json.dumps(info)))

    with _bar(len(units), start, progress) as bar, _pool(n_workers) as pool:
        results = pool.imap(tokenize_unit, jobs, chunksize=1) if pool else map(tokenize_unit, jobs)
        for p, (index, train_ids, val_ids, n_docs) in enumerate(results, start):
            writers["train"].add(train_ids)
            writers["val"].add(val_ids)
            docs += n_docs
            tokens += len(train_ids) + len(val_ids)
            if any(w.finished for w in writers.values()) or time.time() - saved > SAVE_EVERY_S:
                save(p + 1)
                saved = time.time()
            bar.update(1)
            bar.set_postfix_str(f"{docs:,} documents, {tokens:,} tokens, "
                                f"{(tokens - before) / max(time.time() - started, 1e-9) / 1e6:.2f}M tokens/s", refresh=False)
        for w in writers.values():
            w.close()
        source = {"files": [{**f, "sha256": h} for f, h in
                            zip(identity["files"], (pool.map(file_sha256, [f["path"] for f in identity["files"]])
                                                    if pool else map(file_sha256, [f["path"] for f in identity["files"]])))]
                  } if files is not None else {"hub": identity["hub"]}
    totals = {f"{s}_{k}": sum(e[k] for e in w.shards) for s, w in writers.items() for k in ("tokens", "documents")}
    if not totals["train_tokens"]:
        raise ConfigError(f"{_describe(files, hub)} holds no text to train on")
    manifest = {"format": S.FORMAT, "dtype": "uint16", "tokenizer": TOKENIZER_ID, "eot_id": EOT,
                "key": folder.name, "source": source, "settings": settings,
                "train": writers["train"].shards, "val": writers["val"].shards,
                "totals": {**totals, "units": len(units), "seconds": round(time.time() - started, 1)}}
    atomic_write(folder / S.MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1)))
    with contextlib.suppress(OSError):
        os.remove(state_file)
    return manifest



def _files_of(stream: str, state: dict | None) -> set[str]:
    """The files a stream's saved state refers to: finished shards and the part being filled."""
    if not state:
        return set()
    names = {e["file"] for e in state["shards"]}
    if state.get("open_tokens"):
        names.add(S.shard_name(stream, len(state["shards"])) + ".part")
    return names


def _describe(files, hub) -> str:
    if hub is not None:
        return f"data.hub={hub.name!r}"
    return f"data.path ({len(files)} file{'s' if len(files) != 1 else ''})"


@contextlib.contextmanager
def _pool(n: int):
    if n <= 1:
        yield None
        return
    # fork (Linux): workers start at once and inherit the tokenizer's files; elsewhere spawn
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = mp.get_context(method).Pool(n)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


@contextlib.contextmanager
def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        class _Off:
            def update(self, n):
                pass

            def set_postfix_str(self, s, refresh=True):
                pass

        yield _Off()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=initial, unit="unit", desc="preparing", file=sys.stderr, leave=False) as bar:
        yield bar

