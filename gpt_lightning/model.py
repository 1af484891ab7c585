"""GPT-2 in one readable file.

Shapes in comments use: B batch, T new tokens in this call, S all key positions visible to
them (T without a cache, cache length + T with one), C = n_embd, H = n_heads, D = C // H,
V = vocab_size.

The layout follows OpenAI's GPT-2: token + learned position embeddings, pre-LayerNorm
blocks of causal self-attention and a 4x GELU MLP (the tanh form; ``gelu="exact"`` for
nanoGPT's), a final LayerNorm and an LM head tied to the token embedding
(``tie_embeddings=False`` gives the head its own matrix, as in "LLMs from scratch").
Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so GPUs take
the flash path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.tokenizer import IGNORE_INDEX
from gpt_lightning.linear_cross_entropy import linear_cross_entropy


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2 BPE: 50,000 merges + 256 bytes + <|endoftext|>
    context_length: int = 1024  # longest sequence (size of the position table)
    n_embd: int = 768  # width of the residual stream
    n_layers: int = 12  # transformer blocks
    n_heads: int = 12  # attention heads per block (n_embd must divide by it)
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    qkv_bias: bool = True  # GPT-2 has biases on the query/key/value projection
    bias: bool = True  # biases on the other linears and LayerNorms (GPT-2: True)
    layer_norm_epsilon: float = 1e-5
    tie_embeddings: bool = True  # the LM head is the token embedding (GPT-2: True)
    gelu: str = "tanh"  # MLP activation: "tanh" approximation (GPT-2, llm.c) or "exact" erf form (nanoGPT's nn.GELU)
    init_scheme: str = "gpt2"  # random weights: "gpt2" (normal 0.02, scaled residuals) or "pytorch" (module defaults)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "context_length", "n_embd", "n_layers", "n_heads")
        for key in positive:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad_value(f"model.{key}", value, "a positive integer")
        if self.n_embd % self.n_heads:
            divisors = [h for h in range(1, min(self.n_embd, 64) + 1) if self.n_embd % h == 0]
            raise bad_value(
                "model.n_heads", self.n_heads,
                f"model.n_embd={self.n_embd} must be divisible by it (e.g. one of {divisors})",
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise bad_value("model.dropout", self.dropout, "a probability in [0, 1)")
        for key in ("qkv_bias", "bias", "tie_embeddings"):
            if not isinstance(getattr(self, key), bool):
                raise bad_value(f"model.{key}", getattr(self, key), "true or false")
        if self.gelu not in GELU_FORMS:
            raise bad_value("model.gelu", self.gelu, f"one of {list(GELU_FORMS)}")
        if self.init_scheme not in INIT_SCHEMES:
            raise bad_value("model.init_scheme", self.init_scheme, f"one of {list(INIT_SCHEMES)}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GPTConfig":
        if name not in SIZES:
            raise bad_value("model.name", name, f"one of {sorted(SIZES)}")
        return cls(**{**SIZES[name], **overrides})


# How GPT(config) draws random weights (``GPTConfig.init_scheme``):
#   gpt2     GPT-2 / nanoGPT: every Linear and Embedding weight N(0, 0.02), biases 0, the two
#            projections into the residual stream N(0, 0.02 / sqrt(2 n_layers)).
#   pytorch  each module's own default, as "LLMs from scratch" builds its GPT: Embedding
#            N(0, 1), Linear Kaiming-uniform (bias uniform in +-1/sqrt(fan_in)), no scaling.
# LayerNorms start at weight 1, bias 0 in both.
INIT_SCHEMES = ("gpt2", "pytorch")

# GPTConfig.gelu -> F.gelu's ``approximate``. OpenAI trained GPT-2 with the tanh form; nanoGPT
# computes nn.GELU()'s exact form, so its checkpoints keep it (they differ by up to 5e-4 a unit).
GELU_FORMS = {"tanh": "tanh", "exact": "none"}

# Named sizes. The four GPT-2 releases (parameter counts with the tied head) plus tiny
# shapes that train in seconds on a CPU.
SIZES: dict[str, dict] = {
    "gpt2_small": dict(n_layers=12, n_heads=12, n_embd=768),  # 124,439,808
    "gpt2_medium": dict(n_layers=24, n_heads=16, n_embd=1024),  # 354,823,168
    "gpt2_large": dict(n_layers=36, n_heads=20, n_embd=1280),  # 774,030,080
    "gpt2_xl": dict(n_layers=48, n_heads=25, n_embd=1600),  # 1,557,611,200
    "gpt2_mini": dict(n_layers=4, n_heads=4, n_embd=256, context_length=256),  # ~16M
    "gpt2_tiny": dict(n_layers=2, n_heads=2, n_embd=64, context_length=128),  # ~3.4M
}


class KVCache(nn.Module):
    """Preallocated keys and values for one attention layer.

    ``update`` writes the new keys/values in place at ``pos`` and returns views of
    everything written so far, so decoding never concatenates per token.
    """

    def __init__(self, batch_size: int, max_length: int, n_heads: int, head_dim: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        shape = (batch_size, n_heads, max_length, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    @property
    def max_length(self) -> int:
        return self.k.shape[2]

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, H, T, D) for positions pos .. pos+T-1
        end = pos + k.shape[2]
        if end > self.max_length:
            raise ConfigError(
                f"KV cache holds {self.max_length} positions but position {end - 1} was asked for; "
                "set up a longer cache (at most model.context_length)"
            )
        self.k[: k.shape[0], :, pos:end] = k
        self.v[: v.shape[0], :, pos:end] = v
        return self.k[: k.shape[0], :, :end], self.v[: v.shape[0], :, :end]  # (B, H, S, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, input_pos: int | None, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if input_pos is not None:
            if self.cache is None:
                raise ConfigError("input_pos was given but no KV cache is set up: call model.setup_kv_cache(...) first")
            k, v = self.cache.update(input_pos, k, v)  # (B, H, S, D)
        drop = self.dropout if self.training else 0.0
        if mask is None:
            # No padding: plain causal attention. A single new token with a cache sees every
            # cached key, so it needs no mask at all; both cases keep the fused kernels.
            causal = k.shape[2] == T and T > 1
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = GELU_FORMS[cfg.gelu]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_epsilon, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, input_pos: int | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), input_pos, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.context_length, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # weight (V, C)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.activation_checkpointing = False  # recompute blocks in backward to save memory
        if config.init_scheme == "gpt2":  # "pytorch" keeps the defaults the modules drew above
            self.apply(self._init_weights)
            # GPT-2 scales the projections that write into the residual stream.
            for name, p in self.named_parameters():
                if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters counted once (a tied head is the token embedding; an untied one counts)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    # ---- KV cache -------------------------------------------------------------------
    def setup_kv_cache(self, batch_size: int, max_length: int | None = None,
                       device=None, dtype=None) -> None:
        """Preallocate a cache for ``batch_size`` sequences of up to ``max_length`` tokens."""
        max_length = max_length or self.config.context_length
        if max_length > self.config.context_length:
            raise bad_value("max_length", max_length, f"at most model.context_length={self.config.context_length}")
        ref = self.wte.weight
        for block in self.blocks:
            block.attn.cache = KVCache(batch_size, max_length, self.config.n_heads, self.config.head_dim,
                                       device=device or ref.device, dtype=dtype or ref.dtype)

    def clear_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.cache = None

    # ---- forward --------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, *, input_pos: int | None = None,
                position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, last_only: bool = False,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for token ids ``idx`` (B, T).

        input_pos: with a KV cache, where these tokens start in the sequence (0 for a
            prompt, then one more per decoded token); None runs without the cache.
        position_ids: (B, T) positions for the position table; default counts from
            ``input_pos`` (or 0). Left-padded batches pass per-row positions.
        attention_mask: (B, S) with 1 for real tokens and 0 for padding over every key
            position visible to this call (S = input_pos + T with a cache, else T).
        last_only: logits (B, 1, V) of the last position only, which is all that generation
            needs; the LM head over every prompt position is a large part of a prefill.
        targets: (B, T) next-token ids (-100 = ignored): returns instead the summed
            cross-entropy over the other targets (fp32 scalar), computed a chunk of positions
            at a time so the (B, T, V) logits never exist (linear_cross_entropy.py).
        """
        B, T = idx.shape
        start = input_pos or 0
        if start + T > self.config.context_length:
            raise ConfigError(
                f"sequence of {start + T} tokens is longer than model.context_length="
                f"{self.config.context_length}; truncate the input or use a larger context_length"
            )
        if position_ids is None:
            position_ids = torch.arange(start, start + T, device=idx.device).unsqueeze(0)  # (1, T)
        x = self.drop(self.wte(idx) + self.wpe(position_ids))  # (B, T, C)
        if attention_mask is None and start > 0 and T > 1:
            # several new tokens after cached ones: causal among themselves, all of the cache
            attention_mask = torch.ones(B, start + T, dtype=torch.bool, device=idx.device)
        mask = None if attention_mask is None else self._padding_mask(attention_mask, start, T)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, input_pos, mask, use_reentrant=False)
            else:
                x = block(x, input_pos, mask)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        if targets is not None:
            x = self.ln_f(x)
            if type(self.lm_head) is nn.Linear and self.lm_head.bias is None:
                return linear_cross_entropy(x, self.lm_head.weight, targets)
            return F.cross_entropy(self.lm_head(x).flatten(0, 1).float(), targets.flatten(), reduction="sum",
                                   ignore_index=IGNORE_INDEX)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    @staticmethod
    def _padding_mask(attention_mask: torch.Tensor, start: int, T: int) -> torch.Tensor:
        """Boolean (B, 1, T, S) mask: causal, without padded keys, each query sees itself.

        Letting a padded query attend to itself keeps its row from being all False, which
        would make SDPA return NaN that later layers would carry into real positions.
        """
        S = attention_mask.shape[1]
        if S != start + T:
            raise ConfigError(f"attention_mask covers {S} positions but {start + T} are visible")
        q_pos = torch.arange(start, start + T, device=attention_mask.device).unsqueeze(1)  # (T, 1)
        k_pos = torch.arange(S, device=attention_mask.device).unsqueeze(0)  # (1, S)
        causal = k_pos <= q_pos  # (T, S)
        keep = causal & attention_mask.bool()[:, None, :]  # (B, T, S)
        keep = keep | (k_pos == q_pos)
        return keep.unsqueeze(1)  # (B, 1, T, S)


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run reports a large number rather than inf."""
    return math.exp(min(loss, 50.0))
