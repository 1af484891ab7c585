"""int8 weights for generation on CPUs (``generate.py quantize=int8``).

Every Linear (attention qkv/proj, MLP fc/proj, and the LM head) keeps its weight as int8
with one fp32 scale per output channel (symmetric, ``scale = max|w_row| / 127``). The
token embedding stays exact fp32 for the lookup; the tied head gets its own quantized copy
of it, so the embedding and the head are no longer one tensor (a quantized model only
generates). LayerNorms, biases, attention, softmax and the residual stream stay fp32.

The product runs on torch's integer GEMM ``torch._int_mm`` (int8 x int8 -> int32): each
call quantizes its input rows on the fly (symmetric, one scale per row, i.e. per token)
and rescales the int32 result by ``row scale x channel scale``. So activations are int8
inside the product too (dynamic, per token); nothing is calibrated or stored for them.
Why this kernel: with 4x fewer weight bytes per token it is what makes a memory-bound
decoding step faster, and it stores exactly one int8 copy of each weight (fbgemm's packed
dynamic Linear is faster at batch 8 but keeps ~1.7 bytes per weight, which does not fit
GPT-2 XL in 2.5 GB; ``aten._weight_int8pack_mm`` has no fast fp32 path on x86 CPUs).

:func:`load_quantized` builds a quantized model straight from a ``.safetensors`` file,
one block at a time from a memory map, so the fp32 model never exists in memory: GPT-2 XL
(6.2 GB of fp32 weights) loads and generates with a 2.24 GiB peak of resident memory
(benchmarks/int8_memory.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open

from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.model import GPT, GPTConfig

QUANTIZE = (None, "int8")  # the values of generate.py's quantize key


def check_quantize(value, device: torch.device, dtype: torch.dtype) -> None:
    """One-line ConfigError unless ``value`` can run on ``device`` with ``dtype``."""
    if value not in QUANTIZE:
        raise bad_value("quantize", value, "null (the weights as they are) or int8")
    if value is None:
        return
    if device.type != "cpu":
        raise bad_value("quantize", value, f"int8 runs on CPUs (device={device}); on GPUs use "
                        "dtype=bfloat16 instead, or device=cpu")
    if dtype != torch.float32:
        raise bad_value("quantize", value, f"int8 keeps activations in float32 (dtype={str(dtype)[6:]}); "
                        "use dtype=float32 or dtype=auto")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight (N, K), fp32 scales (N,)) of a float weight (N, K): symmetric per row."""
    weight = weight.detach().float()
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (N,)
    q = (weight / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)  # one fp32 temporary
    return q.contiguous(), scale


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with W int8 per output channel and x quantized per row on the fly."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)  # (N, K) int8
        self.register_buffer("scale", scale.float())  # (N,)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())  # (N,), owns its memory

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> "Int8Linear":
        return cls(*quantize_weight(weight), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (M, K)
        x_scale = (rows.abs().amax(dim=1, keepdim=True) / 127).clamp_(min=1e-12)  # (M, 1)
        xq = torch.round(rows / x_scale).clamp_(-127, 127).to(torch.int8)
        # weight.t() is a (K, N) column-major view: the layout the CPU integer GEMM reads fastest
        y = torch._int_mm(xq, self.weight.t()).float().mul_(x_scale * self.scale)  # (M, N)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_model(model: GPT) -> GPT:
    """Replace every Linear of ``model`` by an :class:`Int8Linear`, in place; returns it.

    A tied head becomes a quantized copy of the token embedding, which stays fp32.
    """
    model.eval()
    with torch.no_grad():
        for block in model.blocks:
            for parent, name in ((block.attn, "qkv"), (block.attn, "proj"), (block.mlp, "fc"), (block.mlp, "proj")):
                linear = getattr(parent, name)
                setattr(parent, name, Int8Linear.from_float(linear.weight, linear.bias))
        model.lm_head = Int8Linear.from_float(model.lm_head.weight)  # the tied one is wte.weight
    model.quantized = "int8"
    return model


def int8_draft(model: GPT) -> GPT:
    """The int8 copy of fp32 ``model`` that self-speculative decoding drafts with (``draft.init=int8``).

    Every Linear is quantized as :func:`quantize_model` does; the embeddings and LayerNorms
    are shared with ``model`` (no second fp32 copy), so the draft adds about a quarter of the
    Linear weights' memory. ``model`` itself is left as it is and keeps generating in fp32.
    """
    import copy

    if is_quantized(model):
        raise bad_value("draft.init", "int8", "the target is int8 already (quantize=int8); the int8 draft "
                        "speeds up an fp32 target: drop quantize=int8, or use draft.init=null")
    model.clear_kv_cache()
    # a copy of the modules that shares every tensor; quantizing it then replaces its Linears
    # with int8 ones and leaves the shared fp32 weights untouched
    draft = copy.deepcopy(model, {id(t): t for t in list(model.parameters()) + list(model.buffers())})
    return quantize_model(draft)


def is_quantized(model: GPT) -> bool:
    return getattr(model, "quantized", None) == "int8"


# ---- loading straight from safetensors ------------------------------------------------------
def load_quantized(path: str | Path, config: GPTConfig) -> GPT:
    """An int8 GPT of ``config`` from a GPT-2-layout ``.safetensors`` file (or its folder).

    The file is memory-mapped and read one block at a time (opened anew for each, so
    the pages already read leave the process); each Linear weight is quantized as soon as
    it is read. Every name and shape is checked before anything is loaded.
    """
    from gpt_lightning.weights.hf_io import _expected_shapes, _name_pairs, _resolve

    _fixed_mmap_threshold()
    weights, _ = _resolve(path)
    expected = _expected_shapes(config)
    # ours -> (theirs, transposed), for the tensors this config has (a bias-free model skips
    # the zero biases its export stores for transformers' sake)
    pairs = {ours: pair for ours, pair in _name_pairs(config.n_layers) if ours in expected}
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = set(f.keys())
            prefix = "transformer." if "transformer.wte.weight" in stored else ""
            problems = []
            for ours, (theirs, transposed) in pairs.items():
                if prefix + theirs not in stored:
                    problems.append(f"missing {theirs}")
                    continue
                shape = tuple(f.get_slice(prefix + theirs).get_shape())
                shape = shape[::-1] if transposed else shape
                if shape != expected[ours]:
                    problems.append(f"{theirs}: got {shape}, expected {expected[ours]}")
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"cannot read {weights} as safetensors: {err}") from None
    if problems:
        raise ConfigError(f"checkpoint does not fit a GPT-2 with {config}: {'; '.join(problems[:8])}"
                          f"{' ...' if len(problems) > 8 else ''}")

    def read(f, ours: str) -> torch.Tensor:
        theirs, transposed = pairs[ours]
        t = f.get_tensor(prefix + theirs).float()
        return t.t() if transposed else t

    with torch.device("meta"):
        model = GPT(config)
    model.eval()
    with safe_open(str(weights), framework="pt") as f:
        for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
            if name in pairs:
                _set_parameter(model, name, read(f, name))
        if config.tie_embeddings:
            model.lm_head = Int8Linear.from_float(model.wte.weight)
        elif "lm_head.weight" not in f.keys():
            raise ConfigError(f"{weights} has no lm_head.weight, but its model has an untied head (tie_embeddings=false)")
        else:
            model.lm_head = Int8Linear.from_float(f.get_tensor("lm_head.weight").float())  # (V, C)
    for i, block in enumerate(model.blocks):
        with safe_open(str(weights), framework="pt") as f:
            get = lambda suffix: read(f, f"blocks.{i}.{suffix}") if f"blocks.{i}.{suffix}" in pairs else None  # noqa: E731
            for ln in ("ln_1", "ln_2"):
                for kind in ("weight", "bias"):
                    if f"blocks.{i}.{ln}.{kind}" in pairs:
                        _set_parameter(block, f"{ln}.{kind}", get(f"{ln}.{kind}"))
            block.attn.qkv = Int8Linear.from_float(get("attn.qkv.weight"), get("attn.qkv.bias"))
            block.attn.proj = Int8Linear.from_float(get("attn.proj.weight"), get("attn.proj.bias"))
            block.mlp.fc = Int8Linear.from_float(get("mlp.fc.weight"), get("mlp.fc.bias"))
            block.mlp.proj = Int8Linear.from_float(get("mlp.proj.weight"), get("mlp.proj.bias"))
    model.quantized = "int8"
    return model


def _fixed_mmap_threshold(nbytes: int = 1 << 20) -> None:
    """Make glibc serve every allocation >= ``nbytes`` by mmap, so freeing it returns the memory.

    By default glibc raises that threshold (up to 32 MB) after the first large free; the fp32
    weights read one at a time, freed between long-lived int8 tensors, then fragment the heap
    and stay resident (GPT-2 XL peaked at 3.45 GiB instead of 2.24). Process-wide; no-op off glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        pass


def _set_parameter(module: nn.Module, dotted: str, value: torch.Tensor) -> None:
    *parents, name = dotted.split(".")
    for p in parents:
        module = getattr(module, p)
    # a copy: safetensors may hand out views of its memory map, which would keep the file's pages resident
    setattr(module, name, nn.Parameter(value.clone(), requires_grad=False))
