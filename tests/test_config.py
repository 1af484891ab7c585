"""Every config option composes and builds; YAML defaults equal the schemas'; a run without Hydra."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
from omegaconf import OmegaConf

from helpers import ROOT, compose_config
from gpt_lightning import ConfigError, GPTConfig
from gpt_lightning.config.schemas import (CallbacksConfig, DDPConfig, FinetuneConfig, FSDPConfig, OptimConfig, PerfConfig, StrategyConfig, TrainerConfig, train_spec)
from gpt_lightning.data.instruct import InstructDataModule
from gpt_lightning.data.pretrain import PretrainDataModule
from gpt_lightning.config.generate import GenerateConfig
from gpt_lightning.cli.hydra_adapter import plain
from gpt_lightning.config.schemas import parse

CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")
# what an option needs besides itself to build on this machine, or the one-line error it must give
NEEDS = {("data", "text"): ["data.path=README.md"], ("data", "corpus"): ["data.path=README.md"],
         ("init", "checkpoint"): ["init.path=README.md"],
         ("data", "classification"): ["task=classification", "data.path=README.md"],
         ("data", "preference"): ["task=dpo", "data.path=README.md"]}
ERRORS = {("strategy", "fsdp"): "strategy='fsdp' is invalid: needs GPUs"}


def _options():
    for group in GROUPS:
        for file in sorted((CONF / group).glob("*.yaml")):
            yield group, file.stem


@pytest.mark.parametrize("group, option", list(_options()))
def test_every_option_of_every_group_composes_and_builds(group, option, tmp_path):
    config = "finetune" if option in ("instruct", "classification", "preference", "sms_spam_124m") or group == "judge" else "train"
    overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
    values = plain(compose_config(config, overrides))
    if (group, option) in ERRORS:
        with pytest.raises(ConfigError, match=ERRORS[(group, option)]):
            train_spec(values)
        return
    spec = train_spec(values)
    assert spec.data is not None and isinstance(spec.trainer, TrainerConfig)
    if spec.logger and not {"wandb", "mlflow"} & set(spec.logger):  # the trackers have their own tests
        from gpt_lightning.train.trackers import build_logger

        assert build_logger(spec.logger, tmp_path)


@pytest.mark.parametrize("config", ["train", "finetune"])
def test_entry_configs_build_with_their_defaults(config):
    spec = train_spec(plain(compose_config(config, [])))
    assert (spec.finetune is not None) == (config == "finetune")
    values = plain(compose_config("generate", []))
    assert parse(GenerateConfig, values, "") == GenerateConfig(model=GPTConfig.from_name("gpt2_small"))


def _yaml(path: str) -> dict:
    node = OmegaConf.to_container(OmegaConf.load(CONF / path), resolve=False)
    node.pop("_target_", None)
    return node


def _defaults(schema) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(schema()).items()}


@pytest.mark.parametrize("path, schema", [
    ("optim/adamw.yaml", OptimConfig), ("callbacks/default.yaml", CallbacksConfig),
    ("strategy/auto.yaml", StrategyConfig), ("strategy/ddp.yaml", DDPConfig), ("strategy/fsdp.yaml", FSDPConfig)])
def test_group_yaml_defaults_equal_the_schema(path, schema):
    values = _yaml(path)
    expected = _defaults(schema)
    if schema is CallbacksConfig:  # callbacks.eval's defaults live with the evaluation (test_eval_callback.py)
        values.pop("eval"), expected.pop("eval")
    if schema is OptimConfig:  # min_lr: null in the YAML means lr / 10, which the schema fills in
        assert values.pop("min_lr") is None
        expected.pop("min_lr")
    assert values == expected


def test_trainer_perf_and_finetune_defaults_equal_the_schema():
    trainer = _defaults(TrainerConfig)
    trainer.pop("extra")
    assert {k: trainer[k] for k in _yaml("trainer/default.yaml")} == _yaml("trainer/default.yaml")
    assert _yaml("base.yaml")["perf"] == _defaults(PerfConfig)
    task = OmegaConf.to_container(OmegaConf.load(ROOT / "gpt_lightning/cli/finetune_conf/task/instruct.yaml"))
    assert {**_yaml("finetune.yaml")["finetune"], "task": task["finetune"]["task"]} == _defaults(FinetuneConfig)


@pytest.mark.parametrize("file", sorted((CONF / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_yaml_equals_the_size_table(file):
    assert GPTConfig(**_yaml(f"model/{file.name}")) == GPTConfig.from_name(file.stem)


@pytest.mark.parametrize("path, module", [("data/verdict.yaml", PretrainDataModule),
                                          ("data/instruct.yaml", InstructDataModule)])
def test_data_yaml_defaults_equal_the_data_module_signature(path, module):
    params = inspect.signature(module.__init__).parameters
    for key, value in _yaml(path).items():
        default = params[key].default
        if key == "template":
            from gpt_lightning.data.template import PromptTemplate
            assert PromptTemplate(**value) == PromptTemplate(), key
        elif isinstance(value, str) and value.startswith("${"):
            continue  # interpolated from the top-level config (seed)
        else:
            assert value == default, key


@pytest.mark.parametrize("name", ["generate", "serve"])
def test_generate_and_serve_yaml_equal_their_schemas(name):
    from gpt_lightning.config.serve import ServeConfig

    values = _yaml(f"{name}.yaml")
    values.pop("defaults"), values.pop("hydra")
    expected = _defaults(GenerateConfig if name == "generate" else ServeConfig)
    assert values == {k: expected[k] for k in values}
    assert set(expected) - set(values) == {"model", "init"}


def test_every_key_has_a_comment():
    for file in sorted(CONF.rglob("*.yaml")):
        if {"hydra", "experiment", "debug"} & set(file.parts):  # recipes override keys documented in their groups
            continue
        in_hydra = False  # Hydra's own settings (run folders, logging) are not our keys
        for line in file.read_text().splitlines():
            stripped = line.strip()
            if line and not line.startswith((" ", "#")):
                in_hydra = line.startswith("hydra:")
            if in_hydra or not stripped or stripped.startswith(("#", "-", "defaults:")) or file.name == "none.yaml":
                continue
            if stripped.endswith(":") and not stripped.startswith("_target_"):
                continue  # a node; its keys carry the comments
            assert "  # " in line or "# @package" in line, f"{file.relative_to(CONF)}: key without a comment: {line}"


def test_a_tiny_run_without_hydra(tmp_path):
    """The library alone: typed configs in, a finished run folder out."""
    from gpt_lightning.config.schemas import RunConfig, SamplesConfig, TrainSpec
    from gpt_lightning.config.schemas import InitConfig
    from gpt_lightning.train.job import RunContext, train

    spec = TrainSpec(
        model=GPTConfig.from_name("gpt2_tiny"), init=InitConfig("scratch"),
        data=PretrainDataModule(name="verdict", max_length=32, batch_size=2, progress=False),
        optim=OptimConfig(lr=1e-3, warmup=1), trainer=TrainerConfig(max_steps=3, limit_val_batches=1,
                                                                    enable_progress_bar=False),
        strategy=StrategyConfig(), logger=None, callbacks=CallbacksConfig(samples=SamplesConfig(enabled=False)),
        perf=PerfConfig(), run=RunConfig(seed=1))
    result = train(spec, RunContext(out_dir=tmp_path))
    assert result["global_step"] == 3 and result["tokens_seen"] == 3 * 2 * 32
    assert json.loads((tmp_path / "result.json").read_text())["params"] == result["params"]
    assert (tmp_path / "export" / "model.safetensors").is_file()
