"""Shared fixtures. Offline assets come from ../shared (see its README) when present."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import SHARED

if SHARED.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    os.environ.setdefault("GPT_LIGHTNING_DATA_DIR", str(SHARED / "data"))

# trainer.precision=null trains in fp32 on every test machine, whatever its CPU (the suite's
# figures are fp32 ones); test_precision.py injects the CPU's features instead
os.environ.setdefault("GPT_LIGHTNING_CPU_BF16", "0")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tokenizer():
    """The GPT-2 tokenizer; tests that need it are skipped, with the reason, when its files are missing."""
    from gpt_lightning import ConfigError, get_tokenizer

    try:
        return get_tokenizer()
    except ConfigError as err:
        pytest.skip(str(err))


@pytest.fixture
def tiny_config():
    from gpt_lightning import GPTConfig

    return GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=2, n_heads=4)


@pytest.fixture
def hf_tiny_folder(tmp_path):
    """A randomly initialised transformers GPT-2 saved with save_pretrained (real layout)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=48, vocab_size=97,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    folder = tmp_path / "hf_tiny"
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Caches (tokens, downloads) under a per-session temporary folder."""
    if "GPT_LIGHTNING_CACHE" not in os.environ:
        monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield


@pytest.fixture
def hub(hf_tiny_folder, tmp_path, monkeypatch):
    """A running fake hub holding the tiny model as openai_124m, with an empty cache."""
    from fake_hub import serve_as_openai_124m

    folder, hf = hf_tiny_folder
    with serve_as_openai_124m(folder, tmp_path, monkeypatch) as server:
        server.hf, server.folder = hf, folder
        yield server


@pytest.fixture
def read_only():
    """``read_only(folder)`` makes ``folder`` read-only until the test ends.

    Ordinary users get ``chmod 555``; root ignores file modes, so for root the folder is
    bind-mounted read-only onto itself (the test is skipped where mounting is not allowed).
    """
    import shutil

    undo = []

    def make(folder):
        folder = Path(folder)
        if os.geteuid() != 0:
            mode = folder.stat().st_mode
            folder.chmod(0o555)
            undo.append(lambda: folder.chmod(mode))
            return folder
        if not shutil.which("mount"):
            pytest.skip("running as root (file modes ignored) without mount(8)")
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("running as root (file modes ignored) and bind mounts are not allowed")
        undo.append(lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True))
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root (file modes ignored) and read-only remounts are not allowed")
        return folder

    yield make
    for step in reversed(undo):
        step()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: their ops take microseconds, and
    handing each to a second OpenMP thread costs more than the op (milliseconds when the
    other core is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
