"""GPT-2 weights in and out, in the layout of OpenAI's released checkpoints on the HF hub.

That layout (``model.safetensors`` + ``config.json``) names tensors ``wte.weight``,
``h.0.attn.c_attn.weight`` ... (optionally behind ``transformer.``) and stores the
attention and MLP matrices as Conv1D weights, i.e. transposed (in_features, out_features)
relative to ``nn.Linear``. ``attn.bias``/``attn.masked_bias`` are causal-mask buffers of old
exports and are ignored; ``lm_head.weight`` is the tied token embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .errors import ConfigError
from .model import GPT, GPTConfig

# our name suffix -> (HF name suffix, stored transposed)
_BLOCK_MAP = {
    "ln_1.weight": ("ln_1.weight", False),
    "ln_1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True),
    "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False),
    "ln_2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True),
    "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True),
    "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
_TOP_MAP = {
    "wte.weight": "wte.weight",
    "wpe.weight": "wpe.weight",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
}
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def config_from_hf(hf: dict) -> GPTConfig:
    """GPTConfig from a transformers GPT-2 ``config.json`` dict."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"config.json has model_type={hf.get('model_type')!r}; only 'gpt2' checkpoints load")
    n_inner = hf.get("n_inner")
    if n_inner not in (None, 4 * hf["n_embd"]):
        raise ConfigError(f"config.json has n_inner={n_inner}; this GPT-2 uses 4 * n_embd = {4 * hf['n_embd']}")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_embd=hf["n_embd"],
        n_layers=hf["n_layer"],
        n_heads=hf["n_head"],
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
    )


def config_to_hf(cfg: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "attn_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "resid_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "bos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        "eos_token_id": 50256 if cfg.vocab_size > 50256 else None,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "use_cache": True,
    }


def _resolve(path: str | Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a folder or a .safetensors file."""
    path = Path(path).expanduser()
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise ConfigError(f"no model.safetensors in {path} (found: {found or 'nothing'})")
        cfg = path / "config.json"
        return weights, cfg if cfg.is_file() else None
    if path.is_file():
        cfg = path.parent / "config.json"
        return path, cfg if cfg.is_file() else None
    raise ConfigError(f"checkpoint path {str(path)!r} does not exist")


def read_config(path: str | Path) -> GPTConfig | None:
    """The GPTConfig stored beside the weights at ``path``, or None if there is none."""
    _, cfg_file = _resolve(path)
    return _config_file(cfg_file) if cfg_file else None


def _config_file(cfg_file: Path) -> GPTConfig:
    """A config.json read into a GPTConfig; every problem is one line naming the file."""
    try:
        hf = json.loads(cfg_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{cfg_file} is not UTF-8 text (byte {err.start}); it must be a GPT-2 config.json") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{cfg_file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                          "it must be a GPT-2 config.json") from None
    if not isinstance(hf, dict):
        raise ConfigError(f"{cfg_file} holds a JSON {type(hf).__name__}, not the object of a GPT-2 config.json")
    try:
        return config_from_hf(hf)
    except KeyError as err:
        raise ConfigError(f"{cfg_file} has no {err.args[0]!r} key; it must be a GPT-2 config.json") from None
    except ConfigError as err:
        raise ConfigError(f"{cfg_file}: {err}") from None


def hf_to_ours(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Map a GPT-2 layout state dict onto our parameter names, checking every shape.

    Raises one ConfigError that lists missing, unexpected and mis-shaped tensors.
    """
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    lm_head = state.pop("lm_head.weight", None)
    expected = _expected_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    missing, misshaped = [], []
    for ours, (theirs, transposed) in _name_pairs(cfg):
        if theirs not in state:
            missing.append(theirs)
            continue
        t = state.pop(theirs)
        t = t.t() if transposed else t
        if tuple(t.shape) != expected[ours]:
            misshaped.append(f"{theirs}: got {tuple(t.shape)}, expected {expected[ours]}")
            continue
        out[ours] = t.contiguous()
    unexpected = sorted(state)
    if lm_head is not None and "wte.weight" in out and not torch.equal(lm_head, out["wte.weight"]):
        unexpected.append("lm_head.weight (differs from wte.weight; this GPT-2 ties them)")
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)}: {misshaped[:8]}{' ...' if len(misshaped) > 8 else ''}")
        raise ConfigError(f"checkpoint does not fit a GPT-2 with {cfg}: " + "; ".join(parts))
    return out


def ours_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    out = {}
    for ours, (theirs, transposed) in _name_pairs(model.config):
        t = sd[ours].detach().cpu()
        out["transformer." + theirs] = (t.t() if transposed else t).contiguous()
    return out


def _name_pairs(cfg: GPTConfig):
    for ours, theirs in _TOP_MAP.items():
        if cfg.bias or not ours.endswith(".bias"):
            yield ours, (theirs, False)
    for i in range(cfg.n_layers):
        for ours, (theirs, transposed) in _BLOCK_MAP.items():
            if ours.endswith(".bias") and not (cfg.qkv_bias if "qkv" in ours else cfg.bias):
                continue
            yield f"blocks.{i}.{ours}", (f"h.{i}.{theirs}", transposed)


def _expected_shapes(cfg: GPTConfig) -> dict[str, tuple]:
    with torch.device("meta"):
        model = GPT(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_pretrained(path: str | Path, config: GPTConfig | None = None, **overrides) -> GPT:
    """Build a GPT from weights in the GPT-2 layout.

    The config comes from ``config`` if given, else from ``config.json`` beside the
    weights; ``overrides`` (e.g. ``dropout=0.1``) change fields that do not alter shapes.
    """
    weights, cfg_file = _resolve(path)
    if config is None:
        if cfg_file is None:
            raise ConfigError(f"no config.json beside {weights}; pass config=GPTConfig(...) for its shapes")
        config = _config_file(cfg_file)
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"cannot read {weights} as safetensors: {err}") from None
    ours = hf_to_ours(state, config)  # validates everything before a model exists
    model = GPT(config)
    model.load_state_dict(ours, strict=False)  # lm_head.weight is wte.weight
    return model


def save_pretrained(model: GPT, folder: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` atomically into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = ours_to_hf(model)
    atomic_write(folder / "model.safetensors",
                  lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(config_to_hf(model.config), indent=2) + "\n"
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(text))
    return folder

