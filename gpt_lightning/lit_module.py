"""The LightningModule shared by pretraining and fine-tuning.

Batches are dicts with ``input_ids`` (B, T) and ``targets`` (B, T), where target -100 is
ignored. Logged: train/loss, train/lr, train/grad_norm, train/tokens_seen,
train/tokens_per_s (and train/mfu on GPUs), val/loss and val/perplexity (token-weighted
over the whole validation set and all ranks).
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch
import torch.nn.functional as F

from .errors import bad_value
from .model import GPT
from .schedule import lr_at, warmup_steps_from

IGNORE_INDEX = -100

# Dense bf16 peak TFLOP/s by GPU name, for MFU; override with mfu_peak_tflops.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10G": 125.0, "RTX 4090": 165.0, "V100": 125.0, "T4": 65.0}


class GPTLitModule(L.LightningModule):
    def __init__(self, model: GPT, optim: dict, seed: int = 123, compile: bool = False,
                 activation_checkpointing: bool = False, mfu_peak_tflops: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim = _check_optim(dict(optim))
        self.seed = seed
        self.mfu_peak_tflops = mfu_peak_tflops
        model.activation_checkpointing = activation_checkpointing
        # Compiled forward kept outside the module tree so checkpoint keys stay "model.*".
        object.__setattr__(self, "_forward", torch.compile(model) if compile else model)
        self.save_hyperparameters({"model_config": model.config.to_dict(), "optim": self.optim, "seed": seed,
                                   "compile": compile, "activation_checkpointing": activation_checkpointing})
        self.tokens_seen = 0  # input tokens trained on, all ranks together
        self._batches_seen = 0  # training batches on this rank, seeds each batch's dropout
        self._val_sum = self._val_count = None
        self._window = None  # (time, tokens_seen) at the last throughput log

    # ---- steps --------------------------------------------------------------------
    def loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over non-ignored targets, number of such targets).

        A batch with no target left (every response cut off) gives loss 0, not NaN.
        """
        logits = self._forward(batch["input_ids"])  # (B, T, V)
        targets = batch["targets"]
        total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                reduction="sum")
        count = (targets != IGNORE_INDEX).sum()
        return total / count.clamp(min=1), count

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Dropout masks depend only on (seed, batch number, rank), so a resumed run draws
        # exactly the masks an uninterrupted one would, whatever happened in between.
        torch.manual_seed(self.seed + 1_000_003 * self._batches_seen + 7919 * self.global_rank)
        self._batches_seen += 1
        if self._window is None:
            self._window = (time.perf_counter(), self.tokens_seen)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/tokens_seen", float(self.tokens_seen), on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (self.global_step % max(1, self.trainer.log_every_n_steps)) or self._window is None:
            return
        t0, tok0 = self._window
        now = time.perf_counter()
        if now > t0 and self.tokens_seen > tok0:
            rate = (self.tokens_seen - tok0) / (now - t0)
            self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
            peak = self._peak_flops()
            if peak:
                self.log("train/mfu", rate * self._flops_per_token() / peak, on_step=True, on_epoch=False)
        self._window = (now, self.tokens_seen)

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

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self._val_sum += loss.double() * n
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(torch.stack([self._val_sum, self._val_count]), reduce_op="sum")
        val_loss = (totals[0] / totals[1].clamp(min=1)).float()
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=False)
        self.log("val/perplexity", torch.exp(val_loss.clamp(max=50)), sync_dist=False)

    # ---- optimizer and schedule ---------------------------------------------------
    def configure_optimizers(self):
        o = self.optim
        # By module type, not by tensor shape: FSDP's local shards of a matrix are 1-D.
        linear = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Linear)}
        embedding = {id(m.weight) for m in self.model.modules() if isinstance(m, torch.nn.Embedding)}
        decay, no_decay = [], []
        for p in self.model.parameters():  # the tied head is the token embedding, listed once
            if not p.requires_grad:
                continue
            decayed = o["decay_all"] or (o["decay_embeddings"] if id(p) in embedding else id(p) in linear)
            (decay if decayed else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = warmup_steps_from(o["warmup"], total)
        peak, min_lr = o["lr"], o["min_lr"]
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
    def _flops_per_token(self) -> float:
        """Training FLOPs per token: 6 N + 12 L T C (PaLM appendix B, N without wpe)."""
        c = self.model.config
        return 6 * self.model.num_params(non_embedding=True) + 12 * c.n_layers * c.context_length * c.n_embd

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


def _check_optim(o: dict) -> dict:
    defaults = {"lr": 4e-4, "min_lr": None, "weight_decay": 0.1, "betas": (0.9, 0.95), "eps": 1e-8,
                "warmup": 0.1, "decay_embeddings": False, "decay_all": False}
    unknown = sorted(set(o) - set(defaults))
    if unknown:
        raise bad_value("optim", unknown, f"known keys are {sorted(defaults)}")
    o = {**defaults, **o}
    if not (isinstance(o["lr"], (int, float)) and o["lr"] > 0):
        raise bad_value("optim.lr", o["lr"], "a positive number such as 4e-4")
    o["lr"] = float(o["lr"])
    o["min_lr"] = o["lr"] * 0.1 if o["min_lr"] is None else float(o["min_lr"])
    if not 0 <= o["min_lr"] <= o["lr"]:
        raise bad_value("optim.min_lr", o["min_lr"], f"between 0 and optim.lr={o['lr']}")
    if not (isinstance(o["weight_decay"], (int, float)) and o["weight_decay"] >= 0):
        raise bad_value("optim.weight_decay", o["weight_decay"], "a number >= 0")
    betas = tuple(float(b) for b in o["betas"])
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise bad_value("optim.betas", list(o["betas"]), "two numbers in [0, 1), e.g. [0.9, 0.95]")
    o["betas"] = list(betas)
    for key in ("decay_embeddings", "decay_all"):
        if not isinstance(o[key], bool):
            raise bad_value(f"optim.{key}", o[key], "true or false")
    return o


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))
