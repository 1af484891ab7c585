"""The book's recipe (experiment=verdict_124m) and the options it needs: decay of every
parameter, the eval-mode train loss, the book's model."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers import compose_config
from gpt_lightning.config.schemas import train_spec
from gpt_lightning.cli.hydra_adapter import plain as plain_config
from gpt_lightning import GPT, GPTConfig
from gpt_lightning.train.callbacks import TrainSetLoss
from gpt_lightning.train.module import GPTLitModule
from gpt_lightning.train import job as pipeline


def _optimizer(model, optim):
    module = GPTLitModule(model, optim)
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    return module.configure_optimizers()["optimizer"]


def test_decay_all_decays_every_parameter_once(tiny_config):
    model = GPT(tiny_config)
    groups = _optimizer(model, {"lr": 1e-3, "decay_all": True}).param_groups
    assert [len(g["params"]) for g in groups] == [len(list(model.parameters())), 0]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}
    assert groups[0]["weight_decay"] == 0.1


def test_recipe_is_the_books_model_and_optimizer(tmp_path):
    spec = train_spec(plain_config(compose_config("train", ["experiment=verdict_124m"])))
    model_cfg = spec.model.to_dict()
    with torch.device("meta"):  # the book prints 163,009,536 parameters at context 1024
        assert GPT(GPTConfig(**{**model_cfg, "context_length": 1024})).num_params() == 163_009_536
        model = GPT(GPTConfig(**model_cfg))
    assert (model.config.init_scheme, model.config.dropout, model.config.context_length) == ("pytorch", 0.1, 256)
    optimizer = _optimizer(model, spec.optim)
    decayed, plain = optimizer.param_groups
    assert len(decayed["params"]) == len(list(model.parameters())) and not plain["params"]
    assert decayed["betas"] == (0.9, 0.999) and decayed["lr"] == 4e-4 and decayed["weight_decay"] == 0.1
    assert spec.trainer.gradient_clip_val is None and spec.optim.min_lr == spec.optim.lr and spec.optim.warmup == 0
    assert any(isinstance(cb, TrainSetLoss) for cb in pipeline.build_callbacks(spec.callbacks, tmp_path, spec))


def test_train_set_loss_is_the_eval_mode_loss_of_the_first_batches():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=97, context_length=16, n_embd=32, n_layers=2, n_heads=4, dropout=0.5)
    model = GPT(cfg)
    windows = torch.randint(0, 97, (7, 9))
    train_set = [{"input_ids": w[:-1], "targets": w[1:]} for w in windows]
    module = GPTLitModule(model, {"lr": 1e-3})
    module.train()
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    trainer = SimpleNamespace(sanity_checking=False, datamodule=SimpleNamespace(train_set=train_set, batch_size=3))
    for batches, used in ((2, 6), (None, 7)):
        TrainSetLoss(batches).on_validation_epoch_end(trainer, module)
        assert module.training  # back in train mode
        model.eval()
        with torch.no_grad():  # reference: mean cross-entropy over every target of the windows used
            logits = model(windows[:used, :-1])
            expected = F.cross_entropy(logits.flatten(0, 1), windows[:used, 1:].flatten()).item()
        model.train()
        assert logged["train/eval_loss"] == pytest.approx(expected, rel=1e-5)
