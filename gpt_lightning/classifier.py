"""A GPT-2 with a classification head on the last real token ("LLMs from scratch" chapter 6).

:class:`GPTClassifier` is the GPT (same blocks, same weights, so every loader and the
freezing rules work on it) plus ``score``, a bias-free ``n_embd -> num_labels`` linear
layer, as transformers' ``GPT2ForSequenceClassification`` has. ``forward(idx,
attention_mask)`` returns (B, num_labels): the head applied to the final hidden state of each
row's last real token (the last position whose mask is 1), so right padding is skipped and
left padding is masked out of attention. Positions count real tokens only, so a padded row
scores exactly as the same text alone.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gpt_lightning.model import GPT, GPTConfig


class GPTClassifier(GPT):
    def __init__(self, config: GPTConfig, num_labels: int, labels: list[str] | None = None) -> None:
        super().__init__(config)
        self.num_labels = num_labels
        self.labels = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
        self.score = nn.Linear(config.n_embd, num_labels, bias=False)
        nn.init.normal_(self.score.weight, std=0.02)

    @classmethod
    def from_gpt(cls, model: GPT, num_labels: int, labels: list[str] | None = None, seed: int = 123) -> "GPTClassifier":
        """A classifier holding ``model``'s weights and a new head (drawn with ``seed``)."""
        torch.manual_seed(seed)  # the new head's draw (the GPT's weights are replaced below)
        out = cls(model.config, num_labels, labels).to(model.wte.weight.device)
        missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
        if unexpected or set(missing) - {"score.weight"}:
            raise RuntimeError(f"weights do not fit the classifier: missing {missing}, unexpected {unexpected}")
        out.activation_checkpointing = model.activation_checkpointing
        return out

    def hidden(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (B, T, C) after ``ln_f``."""
        B, T = idx.shape
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: the fused causal path
        if attention_mask is None:
            positions = torch.arange(T, device=idx.device).unsqueeze(0)
            mask = None
        else:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            mask = self._padding_mask(attention_mask, 0, T)
        if T > self.config.context_length:
            from gpt_lightning.errors import ConfigError

            raise ConfigError(f"sequence of {T} tokens is longer than model.context_length={self.config.context_length}")
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(block, x, None, mask, use_reentrant=False)
            else:
                x = block(x, None, mask)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Class logits (B, num_labels) at each row's last real token."""
        h = self.hidden(idx, attention_mask)
        if attention_mask is None:
            last = torch.full((idx.shape[0],), idx.shape[1] - 1, device=idx.device)
        else:
            positions = torch.arange(idx.shape[1], device=idx.device)
            last = (positions * attention_mask.long()).argmax(-1)  # the last position whose mask is 1
        return self.score(h[torch.arange(idx.shape[0], device=idx.device), last])
