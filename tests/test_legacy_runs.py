"""Runs written before the layout by capability keep working: their config.yaml names the old
module paths (gpt_lightning.config.OptimConfig, gpt_lightning.init.InitConfig ...) and their
checkpoints may hold objects pickled under old paths. Such a run resumes from its own
config.yaml and exports from its checkpoint (config/legacy.py maps the paths)."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from helpers import run_job
from gpt_lightning.cli.hydra_adapter import explicit_model_keys, plain, train_job
from gpt_lightning.config import schemas
from gpt_lightning.config.legacy import MOVED_MODULES, MOVED_NAMES, current_path, load_checkpoint
from gpt_lightning.train.job import RunContext
from gpt_lightning.weights import export as export_cli
from gpt_lightning.weights.hf_io import load_pretrained

TINY = ["debug=smoke", "trainer.enable_progress_bar=false", "logger=csv", "callbacks.samples.enabled=false",
        "data.max_length=32", "trainer.max_steps=2", "trainer.val_check_interval=2"]
# What the flat layout wrote into config.yaml (conf/*.yaml of version 0.1.0 before the regrouping).
OLD_TARGETS = {
    "init": "gpt_lightning.init.InitConfig",
    "optim": "gpt_lightning.config.OptimConfig",
    "trainer": "gpt_lightning.config.TrainerConfig",
    "strategy": "gpt_lightning.config.StrategyConfig",
    "callbacks": "gpt_lightning.config.CallbacksConfig",
}


def _old_form(config: dict) -> dict:
    return {k: ({**v, "_target_": OLD_TARGETS[k]} if k in OLD_TARGETS else v) for k, v in config.items()}


def _pickle_under_old_paths(monkeypatch) -> None:
    """Classes pickle under gpt_lightning.config / gpt_lightning.init, as the flat layout's did."""
    old_init = types.ModuleType("gpt_lightning.init")
    monkeypatch.setitem(sys.modules, "gpt_lightning.init", old_init)
    for module, cls in ((importlib.import_module("gpt_lightning.config"), schemas.OptimConfig),
                        (old_init, schemas.InitConfig)):
        monkeypatch.setattr(module, cls.__name__, cls, raising=False)
        monkeypatch.setattr(cls, "__module__", module.__name__)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A finished tiny run, rewritten into the old form: config.yaml and the checkpoint's records
    with old _target_ paths, and old-path objects pickled into the checkpoint's hyper_parameters."""
    out = tmp_path_factory.mktemp("old_run")
    run_job("train", out, TINY)
    config = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump(_old_form(config), sort_keys=False))
    ckpt_file = out / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    ckpt["callbacks"]["RunRecord"]["config"] = _old_form(ckpt["callbacks"]["RunRecord"]["config"])
    ckpt["hyper_parameters"]["optim_config"] = schemas.OptimConfig(lr=1e-3)
    ckpt["hyper_parameters"]["init_config"] = schemas.InitConfig("scratch")
    with pytest.MonkeyPatch.context() as mp:
        _pickle_under_old_paths(mp)
        torch.save(ckpt, ckpt_file)
    (out / ".run.lock").unlink(missing_ok=True)
    return out, ckpt["global_step"]


def test_the_checkpoint_really_is_in_the_old_form(old_run):
    out, _ = old_run
    with pytest.raises((AttributeError, ModuleNotFoundError), match="OptimConfig|gpt_lightning.init"):
        torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    hparams = load_checkpoint(out / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert hparams["optim_config"] == schemas.OptimConfig(lr=1e-3)
    assert hparams["init_config"] == schemas.InitConfig("scratch")
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["_target_"] == "gpt_lightning.config.OptimConfig"


def test_an_old_checkpoint_exports(old_run, tmp_path):
    out, _ = old_run
    folder = export_cli.main([str(out / "checkpoints" / "last.ckpt"), str(tmp_path / "export")])
    state = load_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    model = load_pretrained(folder)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[f"model.{name}"]), name
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 8  # callbacks.samples of debug=smoke, read from the old RunRecord


def test_an_old_run_resumes_from_its_config_yaml(old_run):
    from hydra import compose, initialize_config_dir

    out, step = old_run
    overrides = [f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", f"trainer.max_steps={step + 2}"]
    with initialize_config_dir(config_dir=str(out), version_base="1.3"):
        values = plain(compose("config", overrides=overrides))
    result = train_job(values, RunContext(out_dir=out, overrides=overrides,
                                          explicit_model_keys=explicit_model_keys(overrides)))
    assert result["global_step"] == step + 2
    assert yaml.safe_load((out / "config.yaml").read_text())["init"]["_target_"] == "gpt_lightning.config.schemas.InitConfig"


def test_every_mapped_path_exists():
    for new in [*MOVED_NAMES.values(), *(f"{m}.__name__" for m in MOVED_MODULES.values())]:
        module, _, name = new.rpartition(".")
        assert hasattr(importlib.import_module(module), name), new
    assert current_path("gpt_lightning.data.pretrain.PretrainDataModule") == "gpt_lightning.data.pretrain.PretrainDataModule"
    assert current_path("gpt_lightning.evaluation.judge.Judge") == "gpt_lightning.evaluate.judge.Judge"
    assert Path(schemas.locate("gpt_lightning.loggers.MLFlowLogger", "logger").__module__.replace(".", "/")).name == "trackers"
