"""Two CPU processes (gloo), started by tests/test_distributed_paths.py as torchrun would.

Usage: ``python tests/distributed_worker.py OUT_DIR [SCENARIO ...]`` (default: all three) with LOCAL_RANK, NODE_RANK, WORLD_SIZE,
MASTER_ADDR=127.0.0.1 and MASTER_PORT set. Three scenarios share the process group; rank 0
writes what it measured to OUT_DIR/results.json and the test asserts on it:

1. ``ddp_grad``: DDP, 2 ranks x 2 accumulated micro-batches of one instruction record each
   (unequal target counts): the gradient of the step, to compare with one batch of all four.
2. ``val_padding``: DDP pretraining with one validation window for two ranks: rank 1 has
   no window of its own and must still run (a zero-weight batch), with the loss unchanged.
3. ``fsdp``: FSDP (every block sharded) with samples after validation and responses after
   fit, in a custom template: every rank must take part or rank 0 waits forever.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gpt_lightning import GPT, GPTConfig  # noqa: E402
from gpt_lightning.data.instruct import Example  # noqa: E402

# Four records with 2, 5, 1 and 7 response tokens (and prompts of 3, 1, 4 and 2 tokens).
EXAMPLES = [Example([5, 6, 7], [8, 9]), Example([10], [11, 12, 13, 14, 15]), Example([16, 17, 18, 19], [20]),
            Example([21, 22], [23, 24, 25, 26, 27, 28, 29])]
TEMPLATE = {"preamble": "", "instruction_header": "Q:", "response_header": "A:"}
SAMPLE_PROMPT = "Name a colour."


def tiny(seed: int = 0, vocab_size: int = 97) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, context_length=64, n_embd=32, n_layers=2, n_heads=4, dropout=0.0))


def _trainer(strategy, **kwargs):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     use_distributed_sampler=False, gradient_clip_val=None, **kwargs)


class _KeepGrads:
    """After the optimizer step the gradients of that step are still in .grad."""

    def __init__(self):
        import lightning as L

        outer = self

        class Callback(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if (batch_idx + 1) % trainer.accumulate_grad_batches == 0 and outer.grads is None:
                    outer.grads = {n: p.grad.clone() for n, p in pl_module.model.named_parameters()}

            def on_train_end(self, trainer, pl_module):
                outer.loss = float(trainer.callback_metrics["train/loss"])  # the logged step loss

        self.grads, self.loss, self.callback = None, None, Callback()


def ddp_grad(out: Path, rank: int) -> dict:
    from lightning.pytorch.strategies import DDPStrategy
    from torch.utils.data import DataLoader

    from gpt_lightning.data.instruct import InstructCollator
    from gpt_lightning.train.module import GPTLitModule

    keep = _KeepGrads()
    module = GPTLitModule(tiny(), {"lr": 1e-3})
    loader = DataLoader(EXAMPLES[2 * rank:2 * rank + 2], batch_size=1, collate_fn=InstructCollator())
    trainer = _trainer(DDPStrategy(), max_steps=1, accumulate_grad_batches=2, callbacks=[keep.callback],
                       limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    if rank == 0:
        torch.save(keep.grads, out / "ddp_grads.pt")
    return {"loss": keep.loss}


def val_padding(out: Path, rank: int) -> dict:
    from lightning.pytorch.strategies import DDPStrategy

    from gpt_lightning.data.pretrain import PretrainDataModule
    from gpt_lightning.train.module import GPTLitModule

    dm = PretrainDataModule(name="verdict", max_length=64, batch_size=2, val_fraction=0.02, progress=False)
    module = GPTLitModule(tiny(vocab_size=50257), {"lr": 1e-3})
    trainer = _trainer(DDPStrategy(), max_epochs=1, limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    batches = [len(dm.val_dataloader())]
    with torch.no_grad():
        window = dm.val_set[0]
        direct, count = module.loss({k: v.unsqueeze(0) for k, v in window.items()})
    return {"windows": len(dm.val_set), "val_loss": module.val_loss, "direct": float(direct),
            "count": int(count), "batches_rank0": batches[0]}


def fsdp(out: Path, rank: int) -> dict:
    from lightning.pytorch.strategies import FSDPStrategy

    from gpt_lightning.train.callbacks import SampleText
    from gpt_lightning.data.instruct import InstructDataModule
    from gpt_lightning.train.module import GPTLitModule
    from gpt_lightning.model import Block
    from gpt_lightning.train.callbacks.responses import write_responses

    records = [{"instruction": f"Say {word} twice.", "input": "", "output": f"{word} {word}"}
               for word in ("red", "green", "blue", "black", "white", "pink", "grey", "gold", "teal", "tan")]
    path = out / f"records{rank}.json"  # the same records, one file per rank (no barrier needed)
    path.write_text(json.dumps(records))
    dm = InstructDataModule(path=str(path), batch_size=2, max_length=64, template=TEMPLATE,
                            train_fraction=0.6, val_fraction=0.2, test_fraction=0.2)
    sampler = SampleText(prompt=SAMPLE_PROMPT, max_new_tokens=6, instruct=True, out_dir=str(out))
    module = GPTLitModule(tiny(vocab_size=50257), {"lr": 1e-2})
    class CPUFSDPStrategy(FSDPStrategy):
        """Lightning's FSDPStrategy on CPUs: Lightning refuses the class itself there and
        passes no device to torch's FSDP, which then refuses a CPU; given one, it runs over gloo."""

        def _setup_model(self, model):
            from torch.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel(module=model, device_id=torch.device("cpu"), **self.kwargs)

    trainer = _trainer(CPUFSDPStrategy(auto_wrap_policy={Block}), max_epochs=1, limit_train_batches=2,
                       callbacks=[sampler])
    trainer.fit(module, datamodule=dm)
    responses = out / "responses.jsonl" if rank == 0 else None
    summary = module.on_every_rank(write_responses, dm.test_records, dm.template, responses, max_new_tokens=5,
                                   batch_size=2)
    # The full weights, gathered on every rank (FSDP's full state dict crashes on CPUs).
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False):
        state = {name.replace("_fsdp_wrapped_module.", ""): p.detach().clone()
                 for name, p in module.model.named_parameters()}
    if rank != 0:
        return {}
    plain = tiny(vocab_size=50257).eval()
    missing, unexpected = plain.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # the head is wte, tied
    expected = write_responses(plain, dm.test_records, dm.template, out / "expected.jsonl", max_new_tokens=5,
                               batch_size=2)
    return {"samples": (out / "samples.txt").read_text().splitlines(), "summary": summary,
            "expected_summary": expected,
            "sample_in_template": sampler.sample(plain, dm.template),
            "sample_in_alpaca": sampler.sample(plain, None)}


def main() -> None:
    out = Path(sys.argv[1])
    rank = int(os.environ["LOCAL_RANK"])
    torch.set_num_threads(1)
    scenarios = {"ddp_grad": ddp_grad, "val_padding": val_padding, "fsdp": fsdp}
    results = {name: scenarios[name](out, rank) for name in sys.argv[2:] or scenarios}
    if rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
