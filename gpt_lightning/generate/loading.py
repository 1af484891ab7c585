"""Device, dtype and weights for inference: shared by generate.py, serve.py and evaluate.py."""

from __future__ import annotations

from typing import Iterable

import torch

from gpt_lightning.errors import bad_value
from gpt_lightning.generate.sampling import to_inference_layout
from gpt_lightning.model import GPT, GPTConfig
from gpt_lightning.quantize import is_quantized, load_quantized, quantize_model
from gpt_lightning.tokenizer import Tokenizer
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning.config.schemas import InitConfig
from gpt_lightning.weights.sources import build_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise bad_value("device", name, "auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", name, "no CUDA GPU is visible here; use device=cpu or device=auto")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        gpu_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if gpu_bf16 else torch.float32
    if name not in DTYPES:
        raise bad_value("dtype", name, f"auto or one of {list(DTYPES)}")
    return DTYPES[name]


def load_model(cfg, device: torch.device, dtype: torch.dtype, tok: Tokenizer,
               explicit: Iterable[str] = (), init: InitConfig | None = None, model: GPTConfig | dict | None = None) -> GPT:
    """The target model (or, given ``init``, the draft), quantized if ``cfg.quantize``.

    ``cfg`` is generate.py's or serve.py's config: ``init``, ``model``, ``seed`` and ``quantize``."""
    loader = load_quantized if getattr(cfg, "quantize", None) == "int8" else load_pretrained  # int8: never fp32
    model = build_model(cfg.init if init is None else init, cfg.model if model is None else model, explicit,
                        seed=cfg.seed, tokenizer_vocab=tok.vocab_size, load_safetensors=loader)
    if getattr(cfg, "quantize", None) == "int8":
        return model if is_quantized(model) else quantize_model(model.eval())  # scratch or a .ckpt
    model = model.to(device=device, dtype=dtype).eval()
    return to_inference_layout(model) if device.type == "cpu" else model  # faster CPU GEMMs, same results
