"""What a step reports: its loss under gradient accumulation (plotted and logged), its
gradient however the batch is cut, throughput and MFU (validation time excluded), and
which parameters are weight-decayed with LoRA."""

import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from helpers import compose_config, run_job
from distributed_worker import EXAMPLES, _KeepGrads, tiny
from gpt_lightning import GPT, GPTConfig
from gpt_lightning.train import job as pipeline
from gpt_lightning.data.instruct import InstructCollator
from gpt_lightning.train.module import GPTLitModule
from gpt_lightning.lora import apply_lora

COMMON = ["model=gpt2_tiny", "data.max_length=32", "model.dropout=0.0", "trainer.enable_progress_bar=false",
          "trainer.max_steps=4", "callbacks.samples.max_new_tokens=4", "optim.lr=1e-3", "optim.warmup=1"]


class FakeClock(L.Callback):
    """The module's clock: 1 s per training batch, 1,000 s per validation (samples included)."""

    def __init__(self):
        self.now = 0.0

    def setup(self, trainer, pl_module, stage):
        pl_module.clock = lambda: self.now

    def on_train_batch_end(self, *args):  # runs before the module's hook, which reads the clock
        self.now += 1.0

    def on_validation_epoch_end(self, *args):
        self.now += 1000.0


def _history(run):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["callbacks"]["LossHistory"]


@pytest.fixture(scope="module")
def accumulated_runs(tmp_path_factory):
    """The same 4 x 4 windows as 2 accumulated batches of 2 (fake clock) and as batches of 4."""
    out = tmp_path_factory.mktemp("acc")
    mp = pytest.MonkeyPatch()
    if "GPT_LIGHTNING_CACHE" not in os.environ:  # module scope: before conftest's per-test cache
        mp.setenv("GPT_LIGHTNING_CACHE", str(out / "cache"))
    clock = FakeClock()
    build = pipeline.build_callbacks
    mp.setattr(pipeline, "build_callbacks", lambda c, o, spec: build(c, o, spec) + [clock])
    run_job("train", out / "acc2", COMMON + [
        "data.batch_size=2", "trainer.accumulate_grad_batches=2", "trainer.log_every_n_steps=2",
        "trainer.val_check_interval=4", "trainer.limit_val_batches=1", "perf.mfu_peak_tflops=1e-6", "export=false"])
    mp.setattr(pipeline, "build_callbacks", build)
    overrides = COMMON + ["data.batch_size=4", "trainer.limit_val_batches=0", "callbacks.samples.enabled=false",
                          "logger=none", "export=false"]
    run_job("train", out / "acc1", overrides)
    cfg = compose_config("train", overrides)
    mp.undo()
    return out / "acc2", out / "acc1", cfg


def test_accumulated_loss_is_the_step_loss_not_a_fraction_of_it(accumulated_runs):
    """loss.png and train/loss show the loss of the whole step: with accumulation 2 the
    same as one batch of the same windows (Lightning divides what the step returns by 2)."""
    acc2, acc1, _ = accumulated_runs
    two, one = _history(acc2)["train"], _history(acc1)["train"]
    assert len(two) == len(one) == 4
    assert two[0][1] == pytest.approx(one[0][1], rel=1e-5)  # the same weights, the same 16 windows
    assert [v for _, v, _ in two] == pytest.approx([v for _, v, _ in one], rel=1e-3)
    assert [t for t, _, _ in two] == [t for t, _, _ in one] == [128 * s for s in range(1, 5)]
    acc = EventAccumulator(str(acc2 / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("train/loss")}  # steps counted from 0, every 2nd
    assert sorted(logged) == [1, 3] and all(v == pytest.approx(two[s][1], rel=1e-6) for s, v in logged.items())


def test_throughput_counts_whole_steps_and_leaves_validation_out(accumulated_runs):
    """Each logged window spans 2 steps = 4 batches of 2 x 32 tokens = 4 fake seconds, so
    64 tokens/s, though a 1,000 s validation sits inside the second window; MFU uses the
    trained 32-token window, not the model's 128-token context."""
    acc2, _, cfg = accumulated_runs
    acc = EventAccumulator(str(acc2 / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    rates = [e.value for e in acc.Scalars("train/tokens_per_s")]
    assert len(rates) == 2 and rates == pytest.approx([64.0, 64.0], rel=1e-6)
    c = cfg.model
    n = GPT(GPTConfig.from_name("gpt2_tiny")).num_params(non_embedding=True)
    flops_per_token = 6 * n + 12 * c.n_layers * 32 * c.n_embd
    mfu = [e.value for e in acc.Scalars("train/mfu")]
    assert mfu == pytest.approx([64.0 * flops_per_token / 1e6] * 2, rel=1e-5)


def _instruct_step(batch_size: int, accumulate: int):
    keep = _KeepGrads()
    module = GPTLitModule(tiny(), {"lr": 1e-3})
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, accumulate_grad_batches=accumulate,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, gradient_clip_val=None,
                        callbacks=[keep.callback])
    trainer.fit(module, train_dataloaders=DataLoader(EXAMPLES, batch_size=batch_size,
                                                     collate_fn=InstructCollator(pad_id=0)))
    return keep


def test_instruction_gradient_does_not_depend_on_how_the_batch_is_cut():
    """4 records with 2, 5, 1 and 7 response tokens: one batch of 4 and 2 x 2 accumulated give
    the gradient of the mean over all 15 targets (not the mean of two batch means)."""
    model = tiny()
    batch = InstructCollator(pad_id=0)(EXAMPLES)
    loss = torch.nn.functional.cross_entropy(model(batch["input_ids"]).flatten(0, 1), batch["targets"].flatten(),
                                             ignore_index=-100)
    loss.backward()
    for keep in (_instruct_step(4, 1), _instruct_step(2, 2)):
        for name, p in model.named_parameters():
            torch.testing.assert_close(keep.grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)
        assert keep.loss == pytest.approx(loss.item(), rel=1e-6)


def test_lora_adapters_are_weight_decayed(tiny_config):
    """With LoRA only the adapter matrices train, and optim.weight_decay applies to them."""
    from gpt_lightning import GPT

    model = apply_lora(GPT(tiny_config), rank=4)
    module = GPTLitModule(model, {"lr": 1e-3, "weight_decay": 0.05})
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    decay, no_decay = module.configure_optimizers()["optimizer"].param_groups
    adapters = {id(p) for n, p in model.named_parameters() if n.endswith(("lora_a", "lora_b"))}
    assert decay["weight_decay"] == 0.05 and {id(p) for p in decay["params"]} == adapters
    assert no_decay["params"] == []  # every other weight is frozen
