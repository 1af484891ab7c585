"""LoRA: train low-rank updates of the attention and MLP matrices, merge them at export.

``apply_lora`` replaces the chosen ``nn.Linear`` layers with :class:`LoRALinear` and freezes
every other weight, so only rank x (in + out) numbers per layer are trained and stored in the
optimizer. ``merge_lora_state`` folds W + (alpha / rank) B A back into plain weights, so the
export is an ordinary GPT-2 that transformers and ``generate.py`` load.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPT

TARGETS = ("qkv", "proj", "fc")  # attention q/k/v and output projections, MLP in and out


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # B = 0: starts as the base layer
        self.register_buffer("lora_scaling", torch.tensor(alpha / rank))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (self.drop(x) @ self.lora_a.t()) @ self.lora_b.t()  # (..., out)
        return self.base(x) + update * self.lora_scaling


def apply_lora(model: GPT, rank: int, alpha: float = 16.0, dropout: float = 0.0,
               targets: tuple[str, ...] = TARGETS) -> GPT:
    """Wrap the ``targets`` linears of every block in place and freeze all other weights."""
    if not isinstance(rank, int) or rank < 1:
        raise bad_value("finetune.lora.rank", rank, "a positive integer such as 8 (0 turns LoRA off)")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise bad_value("finetune.lora.targets", list(targets), f"names among {list(TARGETS)}")
    layers = [(name, layer) for block in model.blocks for parent in (block.attn, block.mlp)
              for name in targets if isinstance(layer := getattr(parent, name, None), nn.Linear)]
    if layers:
        name, smallest = min(layers, key=lambda nl: min(nl[1].in_features, nl[1].out_features))
        most = min(smallest.in_features, smallest.out_features)
        if rank > most:
            raise bad_value("finetune.lora.rank", rank, f"at most {most}, the smaller side of the {name} layers "
                            f"({smallest.in_features} x {smallest.out_features}); a rank that large is no "
                            "low-rank update: use a smaller rank, or fine-tune every weight with finetune.lora.rank=0")
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.blocks:
        for parent in (block.attn, block.mlp):
            for name in targets:
                layer = getattr(parent, name, None)
                if isinstance(layer, nn.Linear):
                    setattr(parent, name, LoRALinear(layer, rank, alpha, dropout))
    return model


def merge_lora_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every LoRA layer folded into a plain weight (others unchanged)."""
    out = {}
    for key, value in state.items():
        if key.endswith((".lora_a", ".lora_b", ".lora_scaling")):
            continue
        if ".base." in key:
            prefix, _, leaf = key.rpartition(".base.")
            if leaf == "weight" and f"{prefix}.lora_a" in state:
                a, b = state[f"{prefix}.lora_a"].float(), state[f"{prefix}.lora_b"].float()
                value = (value.float() + state[f"{prefix}.lora_scaling"].float() * (b @ a)).to(value.dtype)
            key = f"{prefix}.{leaf}"
        out[key] = value
    return out
