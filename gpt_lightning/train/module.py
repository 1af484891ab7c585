"""The LightningModule shared by pretraining and fine-tuning.

Batches are dicts with ``input_ids`` (B, T) and ``targets`` (B, T), where target -100 is
ignored. Logged: train/loss, train/lr, train/grad_norm, train/tokens_seen,
train/tokens_per_s (and train/mfu on GPUs), val/loss and val/perplexity (token-weighted
over the whole validation set and all ranks).

The loss of an optimizer step is the mean over every target of the step: all micro-batches
of an accumulation window on all ranks. Each micro-batch returns its summed loss times a
fixed scale; before the optimizer step the gradients are rescaled by the step's total target
count (all-reduced), undoing Lightning's division by ``accumulate_grad_batches`` and DDP's
average over ranks. So the gradient equals that of one batch holding the same records,
however they were cut (instruction batches have unequal target counts), and the logged
train/loss is that step's token-weighted mean.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import lightning as L
import torch

from gpt_lightning.config.schemas import OptimConfig, PerfConfig, parse
from gpt_lightning.data import IGNORE_INDEX
from gpt_lightning.lora import LoRALinear
from gpt_lightning.model import GPT
from gpt_lightning.train.schedule import lr_at, warmup_steps_from, warmup_warning

log = logging.getLogger("gpt_lightning")

# Dense bf16 peak TFLOP/s by GPU name, for MFU; override with mfu_peak_tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10G": 125.0, "RTX 4090": 165.0, "V100": 125.0, "T4": 65.0}


class GPTLitModule(L.LightningModule):
    def __init__(self, model: GPT, optim: OptimConfig | dict | None = None, seed: int = 123,
                 perf: PerfConfig | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimConfig) else parse(OptimConfig, optim or {}, "optim")
        perf = perf or PerfConfig()
        self.seed = seed
        self.mfu_peak_tflops = perf.mfu_peak_tflops
        model.activation_checkpointing = perf.activation_checkpointing
        # Compiled forward kept outside the module tree so checkpoint keys stay "model.*".
        object.__setattr__(self, "_forward", torch.compile(model) if perf.compile else model)
        self.save_hyperparameters({"model_config": model.config.to_dict(), "optim": dataclasses.asdict(self.optim),
                                   "seed": seed, "perf": dataclasses.asdict(perf)})
        self.tokens_seen = 0  # input tokens trained on, all ranks together
        self._batches_seen = 0  # training batches on this rank, seeds each batch's dropout
        self._val_sum = self._val_count = None
        self.val_loss: float | None = None  # the last validation's loss, set when it ends
        self._step: list | None = None  # [loss scale, summed loss, target count] of the step so far
        self.step_loss: torch.Tensor | None = None  # token-weighted loss of the last optimizer step
        self.clock = time.perf_counter  # for the throughput window
        self._window = None  # [start time, tokens_seen, FLOPs] since the last throughput log
        self._step_done = False  # the last training batch ended an optimizer step
        self._paused_at: float | None = None  # validation started: its time is not training time
        self._non_embedding_params = model.num_params(non_embedding=True)  # counted before any sharding

    # ---- steps --------------------------------------------------------------------
    def loss_sum(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss over non-ignored targets, number of such targets); 0 and 0 if none."""
        targets = batch["targets"]
        total = self._forward(batch["input_ids"], targets=targets)  # no (B, T, V) logits (linear_cross_entropy.py)
        return total, (targets != IGNORE_INDEX).sum()

    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over non-ignored targets, number of such targets).

        A batch with no target left (every response cut off) gives loss 0, not NaN.
        """
        total, count = self.loss_sum(batch)
        return total / count.clamp(min=1), count

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout masks depend only on (seed, batch number, rank), so a resumed run draws
        # exactly the masks an uninterrupted one would, whatever happened in between.
        torch.manual_seed(self.seed + 1_000_003 * self._batches_seen + 7919 * self.global_rank)
        self._batches_seen += 1
        self._step_done = False
        if self._window is None:
            self._window = [self.clock(), self.tokens_seen, 0.0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, count = self.loss_sum(batch)
        inputs = batch["input_ids"]
        if self._step is None:  # first micro-batch of an optimizer step: fix the step's loss scale
            # Any constant shared by all ranks and micro-batches works (the gradients are
            # rescaled before the step); this one keeps them near a mean loss's for fp16.
            self._step = [1.0 / (inputs.shape[0] * self.model.config.context_length), 0.0, 0]
        self._step[1] = self._step[1] + total.detach().double()
        self._step[2] = self._step[2] + count
        tokens = inputs.numel() * self.trainer.world_size
        self.tokens_seen += tokens
        self._window[2] += tokens * self._flops_per_token(inputs.shape[1])
        self.log("train/tokens_seen", float(self.tokens_seen), on_step=True, on_epoch=False)
        return total * self._step[0]

    def on_before_optimizer_step(self, optimizer) -> None:
        """Turn the accumulated gradient of scaled sums into that of the step's mean loss."""
        if self._step is None:
            return
        scale, total, count = self._step
        self._step = None
        sums = torch.stack([torch.as_tensor(total, dtype=torch.float64, device=self.device),
                            torch.as_tensor(count, dtype=torch.float64, device=self.device)])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # every rank's targets
        n = sums[1].clamp(min=1)
        # Lightning divided each micro-batch loss by accumulate_grad_batches, DDP/FSDP average over ranks.
        factor = (self.trainer.accumulate_grad_batches * self.trainer.world_size / (scale * n)).float()
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, factor.to(grads[0].device))
        self.step_loss = (sums[0] / n).float()
        self._step_done = True
        self.log("train/loss", self.step_loss, prog_bar=True, on_step=True, on_epoch=False)

    @property
    def step_done(self) -> bool:
        """True when the current training batch ended an optimizer step (``step_loss`` is its loss)."""
        return self._step_done

    def on_every_rank(self, fn, *args, **kwargs):
        """``fn(self.model, *args, **kwargs)`` outside a training or validation step, e.g. to generate text.

        Every rank must call it. Under FSDP the call goes through the sharded root, as
        Lightning routes training_step, so each rank takes part in gathering each block's
        weights; elsewhere it runs on the plain model.
        """
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, FSDPStrategy) and strategy.model is not None and strategy.model is not self:
            return strategy._forward_redirection(strategy.model, self, "_call_with_model", fn, *args, **kwargs)
        return fn(self.model, *args, **kwargs)

    def _call_with_model(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Throughput over whole optimizer steps since the last log (validation excluded)."""
        if not self._step_done or self.global_step % max(1, self.trainer.log_every_n_steps) or self._window is None:
            return
        t0, tok0, flops = self._window
        now = self.clock()
        if now > t0 and self.tokens_seen > tok0:
            rate = (self.tokens_seen - tok0) / (now - t0)
            self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
            peak = self._peak_flops()
            if peak:
                self.log("train/mfu", flops / (now - t0) / peak, on_step=True, on_epoch=False)
        self._window = [now, self.tokens_seen, 0.0]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm and log that norm: one pass over the gradients for both.

        Lightning calls this after unscaling (AMP) and before the optimizer step, so the
        logged train/grad_norm is the true norm before clipping.
        """
        from lightning.pytorch.strategies import FSDPStrategy

        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)
        if gradient_clip_algorithm not in (None, "norm") or isinstance(self.trainer.strategy, FSDPStrategy):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        max_norm = float(gradient_clip_val) if gradient_clip_val else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm, foreach=True)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def on_validation_start(self) -> None:
        self._paused_at = self.clock()

    def on_validation_end(self) -> None:
        # Runs after every callback's validation hooks (samples, checkpoints, the loss plot):
        # all of that time is left out of the training throughput.
        if self._paused_at is not None and self._window is not None:
            self._window[0] += self.clock() - self._paused_at
        self._paused_at = None

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        total, n = self.loss_sum(batch)
        self._val_sum += total.double()
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(torch.stack([self._val_sum, self._val_count]), reduce_op="sum")
        val_loss = (totals[0] / totals[1].clamp(min=1)).float()
        self.val_loss = float(val_loss)  # for callbacks' on_validation_end (this hook runs after theirs)
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=False)
        self.log("val/perplexity", torch.exp(val_loss.clamp(max=50)), sync_dist=False)

    # ---- optimizer and schedule ---------------------------------------------------
    def configure_optimizers(self):
        o = self.optim
        # By module type, not by tensor shape: FSDP's local shards of a matrix are 1-D.
        # LoRA's adapter matrices are decayed like the matrices they adapt (as PEFT under
        # transformers' Trainer): decay pulls B A, the update, towards the base weights.
        linear = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Linear)}
        linear |= {id(p) for m in self.model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)}
        embedding = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}
        decay, no_decay = [], []
        for p in self.model.parameters():  # the tied head is the token embedding, listed once
            if not p.requires_grad:
                continue
            decayed = o.decay_all or (o.decay_embeddings if id(p) in embedding else id(p) in linear)
            (decay if decayed else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = warmup_steps_from(o.warmup, total)
        too_long = warmup_warning(o.warmup, warmup, total, o.lr)
        if too_long and getattr(self.trainer, "is_global_zero", True):
            log.warning(too_long)
        peak, min_lr = o.lr, o.min_lr
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_at(step, peak_lr=peak, min_lr=min_lr, warmup_steps=warmup, total_steps=total) / peak)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint extras ---------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["batches_seen"] = self._batches_seen

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        self._batches_seen = checkpoint.get("batches_seen", 0)

    # ---- throughput ----------------------------------------------------------------
    def _flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token of a ``seq_len``-token window: 6 N + 12 L T C (PaLM
        appendix B, N without wpe, T the trained window, not the model's context length)."""
        c = self.model.config
        return 6 * self._non_embedding_params + 12 * c.n_layers * seq_len * c.n_embd

    def _peak_flops(self) -> float | None:
        if self.mfu_peak_tflops:
            return self.mfu_peak_tflops * 1e12 * self.trainer.world_size
        if self.device.type != "cuda":
            return None
        name = torch.cuda.get_device_name(self.device)
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12 * self.trainer.world_size
        return None
