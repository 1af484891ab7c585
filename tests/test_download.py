"""download(): a cached file verified once is not hashed again until it changes."""

import hashlib
import os

import pytest

from gpt_lightning import download as dl


def test_unchanged_cached_file_is_not_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "cache" / "data" / "file.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"weights" * 1000)
    source = dl.Source("http://127.0.0.1:9/file.bin", hashlib.sha256(dest.read_bytes()).hexdigest(), 7000)
    assert dl.download(source, dest) == dest  # hashed once, nothing fetched

    calls = []
    real = dl.sha256_of
    monkeypatch.setattr(dl, "sha256_of", lambda path: calls.append(path) or real(path))
    assert dl.download(source, dest) == dest
    assert calls == []  # the stamp vouched for the unchanged file

    dest.write_bytes(b"WEIGHTS" * 1000)  # same size, new content and modification time
    os.utime(dest, ns=(dest.stat().st_atime_ns, dest.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(dl.ConfigError, match="could not download"):
        dl.download(source, dest)  # hashed, found wrong, so it tries to fetch (nothing listens)
    assert calls == [dest]
