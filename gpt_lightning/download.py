"""Cached, verified, atomic downloads of the public files the project uses.

Every file is looked for, in order: an explicit path, ``$GPT_LIGHTNING_DATA_DIR/<name>``
(for machines without internet), the cache (``$GPT_LIGHTNING_CACHE``, default
``~/.cache/gpt_lightning``), and only then downloaded. A download goes to ``<name>.part``
(resumed with an HTTP Range request if a previous one was cut off), is checked against the
expected size and sha256, and is renamed into place only when it matches, so an
interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gpt_lightning.errors import ConfigError
from gpt_lightning.progress import byte_progress

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """A public file: where it comes from and what it must hash to."""

    url: str
    sha256: str | None = None
    size: int | None = None
    git_sha1: str | None = None  # git's blob id, where only a repository's tree publishes one


class DownloadError(ConfigError):
    """A download that could not finish (offline, refused, cut off); ``reason`` says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Datasets, under the file names used in ../shared/data and GPT_LIGHTNING_DATA_DIR.
DATASETS: dict[str, Source] = {
    "the-verdict.txt": Source(
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f", 20479),
    "tinyshakespeare.txt": Source(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394),
    "instruction-data.json": Source(
        "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944", 203524),
    # Evaluation sets (evaluate.py). LAMBADA: OpenAI's file, sha256 and size as lm-eval pins them.
    "lambada_test.jsonl": Source(
        "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
        "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226", 1819752),
    # HellaSwag: no published sha256 or size; the git blob id in rowanz/hellaswag's tree at
    # a29ff8e9a04bba4bd6588223785ce105328adc57 (the last commit, 2020) pins the bytes instead.
    "hellaswag_val.jsonl": Source(
        "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
        git_sha1="0f5ee25d72216f12317d5d8a7b92deafa423d81e"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("GPT_LIGHTNING_CACHE", Path.home() / ".cache" / "gpt_lightning")).expanduser()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, source: Source) -> str | None:
    """None if ``path`` matches the source's size and hash, else what is wrong."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"size {size:,} bytes, expected {source.size:,}"
    if source.sha256 is not None:
        digest = sha256_of(path)
        if digest != source.sha256:
            return f"sha256 {digest}, expected {source.sha256}"
    if source.git_sha1 is not None:
        digest = git_blob_sha1(path)
        if digest != source.git_sha1:
            return f"git blob sha1 {digest}, expected {source.git_sha1}"
    return None


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's bytes: sha1 of ``b"blob <size>\\0"`` + the bytes."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(source: Source, dest: Path, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``source`` into ``dest`` atomically and verified; reuse ``dest`` if it is valid.

    Processes that download the same file at once (one per GPU, say) take turns on
    ``<dest>.lock``, so it is fetched once. A transfer cut off early keeps its ``.part``
    and raises :class:`DownloadError`; the next call resumes it.
    """
    dest = Path(dest)
    if _still_verified(dest, source):
        return dest
    seen = _file_state(dest)
    with contextlib.ExitStack() as stack:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_exclusive(dest.with_name(dest.name + ".lock")))
        except OSError as err:
            raise ConfigError(f"cannot download into {dest.parent}: it is not writable ({err.strerror or err}); "
                              f"set GPT_LIGHTNING_CACHE to a writable folder") from None
        if _file_state(dest) != seen and _still_verified(dest, source):  # another process fetched it
            return dest
        part = dest.with_name(dest.name + ".part")
        _transfer(source, part, dest, progress, timeout)
        problem = verify(part, source)
        if problem:
            part.unlink(missing_ok=True)
            raise ConfigError(f"download of {source.url} is corrupt ({problem}); it was deleted, run again")
        os.replace(part, dest)
        _stamp(dest, source)
    return dest


def _file_state(path: Path) -> tuple[int, int, int, int] | None:
    """(size, modification time, inode change time, inode) of ``path``; None when it does not exist.

    Writing to a file, or restoring its modification time afterwards (``os.utime``), changes
    its ctime, which no user call can set back; a file put in its place has another inode.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _stamp_path(dest: Path) -> Path:
    """Where the verified stamp of ``dest`` lives: beside the cache, not in ``dest``'s folder."""
    key = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:24]
    return cache_dir() / "verified" / key


def _stamp(dest: Path, source: Source) -> None:
    """Remember that ``dest`` (in its present state, see ``_file_state``) matched ``source``."""
    stamp = _stamp_path(dest)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(_stamp_text(dest, source))
    except OSError:  # a read-only cache just hashes again next time
        pass


def _still_verified(dest: Path, source: Source) -> bool:
    """``dest`` matches ``source``; an unchanged file verified before is not hashed again
    (gigabytes of weights would cost seconds at every start)."""
    if not dest.is_file():
        return False
    stamp = _stamp_path(dest)
    if stamp.is_file() and stamp.read_text() == _stamp_text(dest, source):
        return True
    if verify(dest, source) is not None:
        return False
    _stamp(dest, source)
    return True


def _stamp_text(dest: Path, source: Source) -> str:
    return " ".join(map(str, (*_file_state(dest), source.sha256 or source.git_sha1)))


def _transfer(source: Source, part: Path, dest: Path, progress: bool, timeout: float) -> None:
    """Bring ``part`` up to the whole of ``source``, resuming what it already holds."""
    start = part.stat().st_size if part.is_file() else 0
    if source.size is not None and start > source.size:
        part.unlink()
        start = 0
    if source.size is not None and start == source.size:
        return  # complete but never verified (e.g. stopped while hashing)
    request = urllib.request.Request(source.url, headers={"User-Agent": "gpt_lightning"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    total = source.size
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:  # server ignored the Range: start over
                start = 0
            length = response.headers.get("Content-Length")
            total = int(length) + start if length is not None else source.size
            with open(part, "ab" if start else "wb") as fh, byte_progress(total, f"downloading {dest.name}", progress, initial=start) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
        reason = str(getattr(err, "reason", err))
        raise DownloadError(
            f"could not download {source.url} ({reason}); without internet, put the file at "
            f"{dest} or in a folder named by GPT_LIGHTNING_DATA_DIR", reason
        ) from None
    received = part.stat().st_size
    if total is not None and received < total:
        reason = f"connection closed after {received:,} of {total:,} bytes; run again to resume"
        raise DownloadError(f"could not download {source.url} ({reason})", reason)


@contextlib.contextmanager
def _exclusive(lock: Path):
    """Hold an exclusive advisory lock on the file ``lock`` (no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def fetch(name: str, source: Source, path: str | Path | None = None, subdir: str = "data",
          key: str = "data.path") -> Path:
    """Find or download the file ``name`` (see the module docstring for the search order).

    ``key`` names the config key that overrides the location, for error messages.
    """
    if path:
        path = Path(path).expanduser()
        if not path.exists():
            raise ConfigError(f"{key}={str(path)!r} does not exist")
        return path
    local = os.environ.get("GPT_LIGHTNING_DATA_DIR")
    if local and (Path(local) / name).is_file():
        found = Path(local) / name
        problem = verify(found, source)
        if problem:
            raise ConfigError(f"{found} does not match its public source ({problem})")
        return found
    cached = cache_dir() / subdir / name
    try:
        return download(source, cached)
    except DownloadError as err:  # offline or unreachable; other problems keep their own message
        problem = verify(cached, source) if cached.is_file() else None
        if problem:  # a cached copy exists but is damaged: say so, not "not available"
            raise ConfigError(
                f"the cached {name} at {cached} is corrupt ({problem}) and a fresh copy could not be "
                f"downloaded ({err.reason}); delete {cached} and run again with internet, or set "
                f"GPT_LIGHTNING_DATA_DIR to a folder that holds a good {name}, or pass {key}=/path/to/{name}"
            ) from None
        raise ConfigError(
            f"{name} is not available offline: {err}. Set GPT_LIGHTNING_DATA_DIR to a folder that "
            f"holds {name}, or pass {key}=/path/to/{name}"
        ) from None


def fetch_dataset(name: str, path: str | Path | None = None) -> Path:
    """A known dataset file by its name (``the-verdict.txt`` ...) or ``path`` if given."""
    if path:
        return fetch(name, DATASETS.get(name, Source("")), path)
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}, or pass data.path=...")
    return fetch(name, DATASETS[name])

