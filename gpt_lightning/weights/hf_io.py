"""GPT-2 weights in and out, in the layout of OpenAI's released checkpoints on the HF hub.

That layout (``model.safetensors`` + ``config.json``) names tensors ``wte.weight``,
``h.0.attn.c_attn.weight`` ... (optionally behind ``transformer.``) and stores the
attention and MLP matrices as Conv1D weights, i.e. transposed (in_features, out_features)
relative to ``nn.Linear``. ``attn.bias``/``attn.masked_bias`` are causal-mask buffers of old
exports and are ignored.

Variants that transformers' GPT-2 cannot express directly are written so that it computes
the same logits, and ``config.json`` records what our model was:

- ``qkv_bias=False`` / ``bias=False``: GPT-2 always has these biases, so the export holds
  zero tensors in their place (a zero bias is the same maths as none) and ``config.json``
  says ``"qkv_bias": false`` / ``"bias": false``. Loading drops them again (they must be
  zero). A config.json without these keys (transformers' own, or an older export) has them
  inferred from the tensors present: no ``h.0.attn.c_attn.bias`` means ``qkv_bias=False``.
- ``tie_embeddings=False``: ``lm_head.weight`` is stored and ``"tie_word_embeddings": false``;
  with tied embeddings ``lm_head.weight`` is left out (transformers ties it to ``wte``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from gpt_lightning.atomic import atomic_write
from gpt_lightning.errors import ConfigError
from gpt_lightning.model import GPT, GPTConfig

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
# config.json's activation_function -> GPTConfig.gelu (gelu_fast is the tanh form written differently)
_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "exact"}


def config_from_hf(hf: dict, tensor_names: Iterable[str] | None = None) -> GPTConfig:
    """GPTConfig from a transformers GPT-2 ``config.json`` dict.

    ``qkv_bias`` / ``bias`` come from config.json when it has them (our exports), else from
    ``tensor_names`` (the weights file's names): a bias that is absent was never there.
    """
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"config.json has model_type={hf.get('model_type')!r}; only 'gpt2' checkpoints load")
    n_inner = hf.get("n_inner")
    if n_inner not in (None, 4 * hf["n_embd"]):
        raise ConfigError(f"config.json has n_inner={n_inner}; this GPT-2 uses 4 * n_embd = {4 * hf['n_embd']}")
    activation = hf.get("activation_function", "gelu_new")  # transformers' default
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"config.json has activation_function={activation!r}; this GPT-2 computes "
                          f"one of {sorted(_ACTIVATIONS)}")
    names = None if tensor_names is None else {n.removeprefix("transformer.") for n in tensor_names}
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_embd=hf["n_embd"],
        n_layers=hf["n_layer"],
        n_heads=hf["n_head"],
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        qkv_bias=bool(hf.get("qkv_bias", names is None or "h.0.attn.c_attn.bias" in names)),
        bias=bool(hf.get("bias", names is None or "h.0.mlp.c_fc.bias" in names)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),  # transformers' default
        gelu=_ACTIVATIONS[activation],
    )


def config_to_hf(cfg: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new" if cfg.gelu == "tanh" else "gelu",
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
        "tie_word_embeddings": cfg.tie_embeddings,
        "qkv_bias": cfg.qkv_bias,  # ours: false means the stored c_attn biases are zeros to drop
        "bias": cfg.bias,  # ours: likewise for the other linear and LayerNorm biases
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
    weights, cfg_file = _resolve(path)
    return _config_file(cfg_file, weights) if cfg_file else None


def _config_file(cfg_file: Path, weights: Path) -> GPTConfig:
    """A config.json read into a GPTConfig (flags it lacks inferred from the tensors in
    ``weights``); every problem is one line naming the file."""
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
        return config_from_hf(hf, _tensor_names(weights))
    except KeyError as err:
        raise ConfigError(f"{cfg_file} has no {err.args[0]!r} key; it must be a GPT-2 config.json") from None
    except ConfigError as err:
        raise ConfigError(f"{cfg_file}: {err}") from None


def _tensor_names(weights: Path) -> list[str]:
    """Names of the tensors in a safetensors file (its header only; no tensor is read)."""
    try:
        with safe_open(str(weights), framework="pt") as fh:
            return list(fh.keys())
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"cannot read {weights} as safetensors: {err}") from None


def hf_to_ours(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Map a GPT-2 layout state dict onto our parameter names, checking every shape.

    Biases that ``cfg`` leaves out must be absent or zero (our exports store zeros there).
    Raises one ConfigError that lists missing, unexpected, mis-shaped and non-zero tensors.
    """
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    lm_head = state.pop("lm_head.weight", None)
    expected = _expected_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    missing, misshaped, nonzero = [], [], []
    for ours, (theirs, transposed) in _name_pairs(cfg.n_layers):
        if theirs not in state:
            if ours in expected:
                missing.append(theirs)
            continue
        t = state.pop(theirs)
        if ours not in expected:  # a bias this model does not have
            if torch.count_nonzero(t):
                nonzero.append(theirs)
            continue
        t = t.t() if transposed else t
        if tuple(t.shape) != expected[ours]:
            misshaped.append(f"{theirs}: got {tuple(t.shape)}, expected {expected[ours]}")
            continue
        out[ours] = t.contiguous()
    unexpected = sorted(state)
    if cfg.tie_embeddings:
        if lm_head is not None and "wte.weight" in out and not torch.equal(lm_head, out["wte.weight"]):
            unexpected.append("lm_head.weight (differs from wte.weight, but tie_word_embeddings is true)")
    elif lm_head is None:
        missing.append("lm_head.weight (tie_word_embeddings is false)")
    elif tuple(lm_head.shape) != expected["lm_head.weight"]:
        misshaped.append(f"lm_head.weight: got {tuple(lm_head.shape)}, expected {expected['lm_head.weight']}")
    else:
        out["lm_head.weight"] = lm_head.contiguous()
    if missing or unexpected or misshaped or nonzero:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)}: {misshaped[:8]}{' ...' if len(misshaped) > 8 else ''}")
        if nonzero:
            parts.append(f"non-zero {len(nonzero)} where qkv_bias={cfg.qkv_bias}/bias={cfg.bias} has no bias: "
                         f"{nonzero[:8]}{' ...' if len(nonzero) > 8 else ''} (set \"qkv_bias\"/\"bias\": true "
                         "in config.json to keep them)")
        raise ConfigError(f"checkpoint does not fit a GPT-2 with {cfg}: " + "; ".join(parts))
    return out


def ours_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights in the GPT-2 layout; biases the model does not have are written as zeros."""
    sd = model.state_dict()
    out = {}
    for ours, (theirs, transposed) in _name_pairs(model.config.n_layers):
        if ours in sd:
            t = sd[ours].detach().cpu()
        else:  # a bias the model leaves out: zeros give transformers' GPT-2 the same logits
            weight = sd[ours.removesuffix(".bias") + ".weight"]  # (out, in) Linear or (C,) LayerNorm
            t = torch.zeros(weight.shape[0], dtype=weight.dtype)
        out["transformer." + theirs] = (t.t() if transposed else t).contiguous()
    if not model.config.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"].detach().cpu().contiguous()  # (V, C)
    return out


def _name_pairs(n_layers: int):
    """(our name, (GPT-2 name, stored transposed)) for every tensor of a GPT-2 with all biases."""
    for ours, theirs in _TOP_MAP.items():
        yield ours, (theirs, False)
    for i in range(n_layers):
        for ours, (theirs, transposed) in _BLOCK_MAP.items():
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
        config = _config_file(cfg_file, weights)
    if overrides:
        config = GPTConfig.from_dict({**config.to_dict(), **overrides})
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"cannot read {weights} as safetensors: {err}") from None
    ours = hf_to_ours(state, config)  # validates everything before a model exists
    model = GPT(config)
    model.load_state_dict(ours, strict=not config.tie_embeddings)  # a tied lm_head.weight is wte.weight
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

