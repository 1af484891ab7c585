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
