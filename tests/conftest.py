"""Shared fixtures. Offline assets come from ../shared (see its README) when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if SHARED.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    os.environ.setdefault("GPT_LIGHTNING_DATA_DIR", str(SHARED / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def data_dir() -> Path:
    path = os.environ.get("GPT_LIGHTNING_DATA_DIR")
    if not path:
        pytest.skip("GPT_LIGHTNING_DATA_DIR is not set (no offline data)")
    return Path(path)


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


# ---- composing the entry points' configs in-process (lightning-hydra-template style) ----
import sys  # noqa: E402
import subprocess  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def compose_config(config_name: str, out_dir: Path, overrides: list[str]):
    """Compose conf/<config_name>.yaml as the entry point would, with ``out_dir`` as run folder."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.name = config_name
    HydraConfig.instance().set_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def run_script(script: str, args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run an entry point as a user would; its output is kept for assertions."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Caches (tokens, downloads) under a per-session temporary folder."""
    if "GPT_LIGHTNING_CACHE" not in os.environ:
        monkeypatch.setenv("GPT_LIGHTNING_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    HydraConfig.instance().cfg = None


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
