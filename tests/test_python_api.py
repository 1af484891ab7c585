"""``gpt_lightning.run_training``: training from a script in one import, checked like train.py."""

from __future__ import annotations

import json

import pytest

import gpt_lightning
from gpt_lightning import ConfigError

TINY = dict(model="gpt2_tiny", data={"max_length": 32, "batch_size": 2},
            trainer={"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 2, "enable_progress_bar": False},
            callbacks={"samples": {"max_new_tokens": 4}}, seed=7)


def test_run_training_trains_exports_and_records_the_spec(tmp_path):
    pytest.importorskip("lightning")
    result = gpt_lightning.run_training(tmp_path / "run", **TINY)
    assert result["global_step"] == 2 and result["tokens_seen"] == 2 * 2 * 32
    assert result["params"] == 3_324_736  # gpt2_tiny: the size name became its GPTConfig
    assert (tmp_path / "run/export/model.safetensors").is_file()
    saved = json.loads((tmp_path / "run/result.json").read_text())
    assert saved["best_val_loss"] == result["best_val_loss"] and result["best_val_loss"] is not None


def test_run_training_rejects_a_bad_value_in_one_line_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer\.max_steps=0 is invalid"):
        gpt_lightning.run_training(tmp_path / "run", **{**TINY, "trainer": {"max_steps": 0}})
    with pytest.raises(ConfigError, match=r"^optim\.lrr="):
        gpt_lightning.run_training(tmp_path / "run", **{**TINY, "optim": {"lrr": 1e-3}})
    assert not (tmp_path / "run").exists()


def test_run_training_builds_the_spec_train_py_builds(monkeypatch, tmp_path):
    """The same keys give the same model, optimizer, callbacks and data seed as the command line."""
    import gpt_lightning.train.job as job
    from gpt_lightning.cli.hydra_adapter import plain
    from gpt_lightning.config.schemas import train_spec
    from helpers import compose_config

    seen = {}
    monkeypatch.setattr(job, "train", lambda spec, ctx: seen.update(spec=spec, ctx=ctx) or {})
    gpt_lightning.run_training(tmp_path / "run", model="gpt2_tiny", seed=7, optim={"lr": 1e-3})
    cli = train_spec(plain(compose_config("train", ["model=gpt2_tiny", "seed=7", "optim.lr=1e-3"])))
    ours = seen["spec"]
    assert (ours.model, ours.optim, ours.seed) == (cli.model, cli.optim, cli.seed)
    assert ours.callbacks.samples == cli.callbacks.samples and ours.callbacks.checkpoint == cli.callbacks.checkpoint
    assert ours.data.seed == cli.data.seed == 7
    assert seen["ctx"].out_dir == tmp_path / "run"
