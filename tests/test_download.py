"""download.py: cached, verified, resumable downloads (served by the fake hub on 127.0.0.1)."""

import hashlib
import os
import threading
from dataclasses import replace

import pytest

from fake_hub import WEIGHTS_URL, max_logit_diff as _max_logit_diff, openai_124m as _openai_124m
from gpt_lightning import ConfigError
from gpt_lightning import download as dl
from gpt_lightning.weights.sources import HUB_WEIGHTS


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


def test_hash_mismatch_is_rejected_and_leaves_no_file(hub, monkeypatch):
    monkeypatch.setitem(HUB_WEIGHTS, "openai_124m", replace(HUB_WEIGHTS["openai_124m"], sha256="0" * 64))
    with pytest.raises(ConfigError, match="corrupt .*sha256"):
        _openai_124m()
    assert not (hub.cache / "model.safetensors").exists()
    assert not (hub.cache / "model.safetensors.part").exists()


def test_interrupted_download_resumes_where_it_stopped(hub):
    hub.cut.add(WEIGHTS_URL)
    with pytest.raises(ConfigError, match="connection closed after .* run again to resume"):
        _openai_124m()
    part = hub.cache / "model.safetensors.part"
    size = HUB_WEIGHTS["openai_124m"].size
    assert part.stat().st_size == size // 2
    assert not (hub.cache / "model.safetensors").exists()

    model = _openai_124m()
    assert hub.weight_requests()[-1] == (WEIGHTS_URL, f"bytes={size // 2}-")
    assert _max_logit_diff(model, hub.hf) <= 1e-4
    assert not part.exists()


def test_leftover_part_restarts_when_range_is_ignored(hub):
    hub.cache.mkdir(parents=True)
    (hub.cache / "model.safetensors.part").write_bytes(b"stale bytes from another file")
    hub.ranges = False
    model = _openai_124m()
    assert hub.weight_requests() == [(WEIGHTS_URL, "bytes=29-")]  # asked to resume, got it all
    assert _max_logit_diff(model, hub.hf) <= 1e-4


def test_garbage_part_fails_verification_then_next_run_starts_over(hub):
    hub.cache.mkdir(parents=True)
    (hub.cache / "model.safetensors.part").write_bytes(b"\0" * 100)
    with pytest.raises(ConfigError, match="corrupt"):
        _openai_124m()
    assert not (hub.cache / "model.safetensors.part").exists()
    model = _openai_124m()
    assert hub.weight_requests()[-1] == (WEIGHTS_URL, None)
    assert _max_logit_diff(model, hub.hf) <= 1e-4


def test_concurrent_builds_download_once(hub):
    results = []
    workers = [threading.Thread(target=lambda: results.append(_openai_124m())) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(results) == 2
    assert hub.weight_requests() == [(WEIGHTS_URL, None)]
    assert all(_max_logit_diff(model, hub.hf) <= 1e-4 for model in results)


# ---- faults: a cache changed behind our back, a corrupt download, a read-only cache ----
from fake_hub import serving  # noqa: E402


def _published(tmp_path, data: bytes, served: bytes | None = None):
    """A file on a 127.0.0.1 server (``served`` bytes, by default ``data``) and its Source."""
    root = tmp_path / "srv"
    root.mkdir()
    (root / "file.bin").write_bytes(served if served is not None else data)
    return root, hashlib.sha256(data).hexdigest(), len(data)


def test_cached_file_corrupted_in_place_with_size_and_mtime_kept_is_verified_again(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
    good = b"weights" * 1000
    root, sha, size = _published(tmp_path, good)
    dest = tmp_path / "cache" / "data" / "file.bin"
    with serving(root, monkeypatch) as server:
        source = dl.Source(f"{server.url}/file.bin", sha, size)
        dl.download(source, dest, progress=False)
        assert len(server.requests) == 1
        before = dest.stat()
        with open(dest, "r+b") as fh:  # bit rot / a careless tool: same size, same mtime
            fh.write(b"X")
        os.utime(dest, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (dest.stat().st_size, dest.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert dl.download(source, dest, progress=False) == dest
        assert len(server.requests) == 2  # found corrupt, fetched again
    assert dest.read_bytes() == good


def test_corrupt_download_names_the_real_cause_not_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPT_LIGHTNING_DATA_DIR", raising=False)
    good = b"the text" * 100
    root, sha, size = _published(tmp_path, good, served=b"THE TEXT" * 100)  # same size, other bytes
    with serving(root, monkeypatch) as server:
        with pytest.raises(dl.ConfigError) as err:
            dl.fetch("file.bin", dl.Source(f"{server.url}/file.bin", sha, size))
    message = str(err.value)
    assert "corrupt" in message and f"expected {sha}" in message
    assert "not available offline" not in message
    assert not (tmp_path / "cache" / "data" / "file.bin").exists()


def test_unreachable_download_still_says_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPT_LIGHTNING_DATA_DIR", raising=False)
    with pytest.raises(dl.ConfigError, match="file.bin is not available offline: could not download"):
        dl.fetch("file.bin", dl.Source("http://127.0.0.1:9/file.bin", "0" * 64, 10))


def test_corrupt_cached_copy_offline_names_the_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPT_LIGHTNING_DATA_DIR", raising=False)
    cached = tmp_path / "cache" / "data" / "file.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"damaged!!!")  # the right size, other bytes
    with pytest.raises(dl.ConfigError, match=r"the cached file.bin at .*file.bin is corrupt \(sha256 .*\) and a "
                                             r"fresh copy could not be downloaded .*; delete .*file.bin and run again"):
        dl.fetch("file.bin", dl.Source("http://127.0.0.1:9/file.bin", "0" * 64, 10))


def test_read_only_download_cache_is_one_line(tmp_path, monkeypatch, read_only):
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only(cache)
    monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(cache))
    monkeypatch.delenv("GPT_LIGHTNING_DATA_DIR", raising=False)
    with pytest.raises(dl.ConfigError) as err:
        dl.fetch("file.bin", dl.Source("http://127.0.0.1:9/file.bin", "0" * 64, 10))
    assert "not writable" in str(err.value) and "GPT_LIGHTNING_CACHE" in str(err.value)
    assert "\n" not in str(err.value)
