"""Direct Preference Optimization (Rafailov et al. 2023, eq. 7) for ``finetune.py task=dpo``.

For a prompt x with a chosen response y_w and a rejected one y_l, and sequence
log-probabilities summed over the response tokens only::

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

pi is the model being trained, ref the frozen starting weights. The implicit rewards are
``beta * (log pi - log ref)`` of each response; logged per step and per validation:
``loss``, ``reward_margin`` (chosen minus rejected reward), ``preference_accuracy`` (share
of pairs whose chosen reward is larger), ``chosen_logp`` and ``rejected_logp`` (the
policy's mean sequence log-probabilities).

The reference: with LoRA it is the same model with its adapters switched off (their
scaling set to 0 for the reference pass), so no second copy of the weights is held;
otherwise a frozen copy of the starting weights, kept out of the checkpoint and the
optimizer. The loss is written here because it is a few lines over our model's logits;
TRL's ``DPOTrainer`` wraps transformers' Trainer and cannot drive a Lightning module.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F

from gpt_lightning.data import IGNORE_INDEX
from gpt_lightning.lora import LoRALinear
from gpt_lightning.train.module import GPTLitModule


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) sum of log p(target) over each row's non-ignored targets."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = targets != IGNORE_INDEX
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards); rewards are detached."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, (beta * chosen).detach(), (beta * rejected).detach()


@contextlib.contextmanager
def adapters_off(model: torch.nn.Module):
    """The model computes as its base weights: every LoRA update scaled by 0 inside the block."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    saved = [m.lora_scaling.clone() for m in layers]
    try:
        for m in layers:
            m.lora_scaling.zero_()
        yield model
    finally:
        for m, value in zip(layers, saved):
            m.lora_scaling.copy_(value)


class DPOLitModule(GPTLitModule):
    """GPTLitModule whose loss is DPO's, one term per preference pair (see the module docstring)."""

    METRICS = ("loss", "reward_margin", "preference_accuracy", "chosen_logp", "rejected_logp")

    def __init__(self, model, optim=None, seed: int = 123, perf=None, beta: float = 0.1) -> None:
        super().__init__(model, optim, seed=seed, perf=perf)
        self.beta = beta
        self.uses_lora = any(isinstance(m, LoRALinear) for m in model.modules())
        reference = None
        if not self.uses_lora:
            reference = copy.deepcopy(model).eval()
            for p in reference.parameters():
                p.requires_grad_(False)
        object.__setattr__(self, "reference", reference)  # outside the module tree: not saved, not optimized

    def on_fit_start(self) -> None:
        if self.reference is not None:
            self.reference.to(self.device)

    def reference_logps(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return sequence_logps(self.reference(input_ids), targets)
            was_training = self.model.training
            self.model.eval()  # the reference is deterministic: no dropout
            try:
                with adapters_off(self.model):
                    return sequence_logps(self.model(input_ids), targets)
            finally:
                self.model.train(was_training)

    def pair_terms(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-pair losses, rewards and policy log-probabilities, ignored pairs marked."""
        ids, targets = batch["input_ids"], batch["targets"]
        policy = sequence_logps(self._forward(ids), targets)  # (2B,)
        ref = self.reference_logps(ids, targets)
        half = ids.shape[0] // 2
        losses, chosen_reward, rejected_reward = dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], self.beta)
        keep = (targets[:half] != IGNORE_INDEX).any(-1) | (targets[half:] != IGNORE_INDEX).any(-1)
        return {"losses": losses, "keep": keep, "margin": chosen_reward - rejected_reward,
                "accuracy": (chosen_reward > rejected_reward).float(), "chosen_logp": policy[:half].detach(),
                "rejected_logp": policy[half:].detach()}

    def loss_sum(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        terms = self.pair_terms(batch)
        self._terms = terms
        keep = terms["keep"]
        return (terms["losses"] * keep).sum(), keep.sum()

    def _means(self, terms: dict) -> dict[str, torch.Tensor]:
        keep = terms["keep"].float()
        n = keep.sum().clamp(min=1)
        return {"reward_margin": (terms["margin"] * keep).sum() / n,
                "preference_accuracy": (terms["accuracy"] * keep).sum() / n,
                "chosen_logp": (terms["chosen_logp"] * keep).sum() / n,
                "rejected_logp": (terms["rejected_logp"] * keep).sum() / n}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        for name, value in self._means(self._terms).items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False)
        return out

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_extra = torch.zeros(4, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        t, keep = self._terms, self._terms["keep"].double()
        self._val_extra += torch.stack([(t[k].double() * keep).sum()
                                        for k in ("margin", "accuracy", "chosen_logp", "rejected_logp")])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # val/loss: the mean DPO loss over the pairs
        totals = self.trainer.strategy.reduce(torch.cat([self._val_extra, self._val_count.view(1)]), reduce_op="sum")
        n = totals[-1].clamp(min=1)
        for name, value in zip(("reward_margin", "preference_accuracy", "chosen_logp", "rejected_logp"), totals[:-1] / n):
            self.log(f"val/{name}", value.float(), sync_dist=False)
