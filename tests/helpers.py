"""Helpers the tests share: paths, offline data, composing configs and running entry points.

Tests import these with ``from helpers import ...`` (tests/ is on sys.path under pytest);
fixtures live in conftest.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def wide_gpt(vocab_size: int, context_length: int, seed: int = 0):
    """A random 2-layer GPT with wide weights (N(0, 0.3)), so its greedy text varies instead of
    repeating and a position or cache mistake shows in the tokens."""
    import torch

    from gpt_lightning import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=context_length, n_embd=32, n_layers=2, n_heads=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


def data_dir() -> Path:
    path = os.environ.get("GPT_LIGHTNING_DATA_DIR")
    if not path:
        pytest.skip("GPT_LIGHTNING_DATA_DIR is not set (no offline data)")
    return Path(path)


def compose_config(config_name: str, overrides: list[str]):
    """Compose conf/<config_name>.yaml as the entry point would (without its hydra node)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def run_job(config_name: str, out_dir: Path, overrides: list[str]) -> dict:
    """Run train.py's or finetune.py's job in this process, into ``out_dir``, as the CLI would."""
    from gpt_lightning.cli.hydra_adapter import explicit_model_keys, plain, train_job
    from gpt_lightning.train.job import RunContext

    values = plain(compose_config(config_name, overrides))
    ctx = RunContext(out_dir=Path(out_dir), overrides=list(overrides), explicit_model_keys=explicit_model_keys(overrides),
                     command=shlex.join(["python", f"{config_name}.py", *overrides]))
    return train_job(values, ctx)


def run_script(script: str, args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run an entry point as a user would; its output is kept for assertions."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
