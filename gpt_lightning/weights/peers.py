"""Checkpoints of the GPT-2 projects our users come from, read into this project's GPT.

``init=checkpoint init.path=FILE`` recognises these by their content, whatever the file is called:

- nanoGPT (karpathy/nanoGPT) ``ckpt.pt``: a ``torch.save`` dict whose ``model`` is the state dict
  (behind ``_orig_mod.`` when the model was torch.compile'd) and ``model_args`` holds n_layer,
  n_head, n_embd, block_size, bias, vocab_size and dropout. Tensor names are OpenAI's
  (``transformer.h.N.attn.c_attn.weight`` ...) in ``nn.Linear``'s (out, in) orientation; the LM
  head is tied to ``wte`` and ``bias`` covers every Linear and LayerNorm. Its MLP runs
  ``nn.GELU()``, the exact (erf) form, so the model gets ``gelu="exact"``. A model trained from
  scratch on GPT-2 tokens has its 50257 rows padded to 50304; the 47 extra rows belong to no
  token (the logits of the real ones do not depend on them), so they are dropped as llm.c's are,
  and generation never samples an id the tokenizer cannot decode. Other vocabularies are kept.
- llm.c (karpathy/llm.c) ``gpt2_124M.bin`` / ``model_NNNNNNNN.bin``: 256 int32 of header (magic
  20240326, version 3 = float32 or 5 = bfloat16, maxT, V, L, NH, C, padded Vp), then 16 arrays
  in this order, each stacked over the L layers: wte (Vp, C), wpe (maxT, C), ln1w, ln1b (L, C),
  qkvw (L, 3C, C), qkvb (L, 3C), attprojw (L, C, C), attprojb, ln2w, ln2b (L, C), fcw (L, 4C, C),
  fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C), lnfw, lnfb (C). llm.c never scores the padded
  rows V..Vp of wte, so they are dropped; the head is tied and the GELU is the tanh form.
- "LLMs from scratch" (rasbt/LLMs-from-scratch, chapters 4-7) ``GPTModel`` state dicts: ``model.pth``,
  ``gpt2-small-124M.pth`` ..., or the ``model_state_dict`` of ``model_and_optimizer.pth``. Names:
  ``tok_emb``, ``pos_emb``, ``trf_blocks.N.att.W_query/W_key/W_value`` (biases with qkv_bias),
  ``att.out_proj``, ``ff.layers.0`` / ``ff.layers.2``, ``norm1``/``norm2``/``final_norm``
  ``scale``/``shift``, and ``out_head``, a matrix of its own (``tie_embeddings=False``).
  These files do not store the number of heads: ``model.n_heads`` when the user set it, else the
  GPT-2 release of the same width and depth (12 for 768 x 12 ...), else the ``model`` config's.

The architecture comes from the tensors (layers, width, context, vocabulary, biases); every
problem is one line naming ``init.path``. Hand-written because each project reads only its
own files and no library converts between them; the maths is the same GPT-2, only names,
orientation and packing differ.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gpt_lightning.config.schemas import PEER_KINDS
from gpt_lightning.errors import bad_value
from gpt_lightning.model import SIZES, GPTConfig

log = logging.getLogger("gpt_lightning")

KEY = "init.path"

LLMC_MAGIC = 20240326
LLMC_VERSIONS = {3: torch.float32, 5: torch.bfloat16}
# llm.c's other files start with their own magic numbers; naming them helps whoever mixed them up
LLMC_OTHER_FILES = {
    20240327: "llm.c's debug state (inputs, logits, gradients), not model weights; give gpt2_124M.bin",
    20240328: "llm.c's tokenizer file, not model weights; give gpt2_124M.bin",
    20240520: "an llm.c token shard (training data), not model weights",
    20240522: "an llm.c evaluation data file, not model weights",
    20240527: "llm.c's optimizer state (state_*.bin), not model weights; give the model_*.bin beside it",
}
LLMC_HEADER_INTS = 256
GPT2_VOCAB, NANOGPT_PADDED_VOCAB = 50257, 50304  # nanoGPT pads GPT-2's vocabulary to a multiple of 64


@dataclass(frozen=True)
class PeerCheckpoint:
    """A peer's checkpoint: which layout, the architecture it holds, and its weights."""

    kind: str  # e.g. "nanoGPT ckpt.pt", for messages
    config: GPTConfig
    state: Callable[[], dict[str, torch.Tensor]]  # our parameter names; read when called


def read_peer(path: Path, requested: dict, explicit: set[str]) -> PeerCheckpoint | None:
    """The peer checkpoint at ``path``, or None when it is none of theirs (a Lightning ``.ckpt``,
    safetensors, anything else: the caller decides). A peer file that is broken, or a
    ``torch.save`` file of unknown content, raises one line naming ``init.path``.

    ``requested`` is the ``model`` config (GPTConfig fields) and ``explicit`` the model keys the
    user set; LLMs-from-scratch files need them for the number of heads.
    """
    with open(path, "rb") as fh:
        head = fh.read(4 * LLMC_HEADER_INTS)
    if len(head) >= 4:
        magic = int(np.frombuffer(head[:4], dtype="<i4")[0])
        if magic == LLMC_MAGIC:
            return _llmc(path, head)
        if magic in LLMC_OTHER_FILES:
            raise bad_value(KEY, str(path), LLMC_OTHER_FILES[magic])
    if not zipfile.is_zipfile(path):
        return None
    data = _torch_file(path)
    if data is None or (isinstance(data, dict) and "state_dict" in data):
        return None  # a Lightning checkpoint, or one only the trusted-pickle path reads
    if isinstance(data, dict) and isinstance(data.get("model"), dict) and "model_args" in data:
        return _nanogpt(path, data)
    state = data.get("model_state_dict", data) if isinstance(data, dict) else None
    if isinstance(state, dict) and any(_strip(k).startswith("trf_blocks.") for k in state):
        return _from_scratch(path, state, requested, explicit)
    keys = sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__
    raise bad_value(KEY, str(path), f"a torch.save file this project does not read (top level: {keys}); "
                    f"expected {PEER_KINDS}, or a Lightning .ckpt of this project")


# ---- torch.save files -------------------------------------------------------------------------
def _torch_file(path: Path):
    """The unpickled file (tensors only, memory-mapped), or None when only a trusted pickle
    load could read it (so it may be a Lightning checkpoint with Python objects in it)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as err:
        if path.suffix == ".ckpt":
            return None  # the Lightning path reads (trusted) pickles and words its own errors
        if isinstance(err, pickle.UnpicklingError):  # weights_only met a Python object
            what = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
            raise bad_value(KEY, str(path), f"a pickle with Python objects that a tensors-only load refuses "
                            f"({what.group(1) if what else 'not tensors'}); expected {PEER_KINDS}") from None
        reason = " ".join(str(err).split())[:200]
        raise bad_value(KEY, str(path), f"a zip archive that torch.load cannot read ({reason}); "
                        f"expected {PEER_KINDS}") from None


def _strip(name: str) -> str:
    """A state-dict name without torch.compile's ``_orig_mod.`` and DDP's ``module.`` prefixes."""
    while name.startswith(("_orig_mod.", "module.")):
        name = name.split(".", 1)[1]
    return name


def _layers(names, pattern: str) -> int:
    """Number of blocks: one more than the highest index ``pattern`` (a regex with one group) finds."""
    found = [int(m.group(1)) for m in map(re.compile(pattern).match, names) if m]
    return max(found) + 1 if found else 0


def _tensor(state: dict, name: str, path: Path, kind: str) -> torch.Tensor:
    if name not in state:
        raise bad_value(KEY, str(path), f"{kind} without {name!r}: an incomplete or different model")
    return state[name]


# ---- nanoGPT --------------------------------------------------------------------------------
# nanoGPT module under h.N -> ours under blocks.N (weights in the same (out, in) orientation)
_NANOGPT_BLOCK = {"ln_1": "ln_1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
                  "ln_2": "ln_2", "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
_NANOGPT_NAME = re.compile(r"h\.(\d+)\.(.+)\.(weight|bias)$")


def _nanogpt(path: Path, ckpt: dict) -> PeerCheckpoint:
    kind = "nanoGPT ckpt.pt"
    state = {_strip(k).removeprefix("transformer."): v for k, v in ckpt["model"].items()}
    state = {k: v for k, v in state.items() if not re.fullmatch(r"h\.\d+\.attn\.bias", k)}  # causal masks
    args = ckpt["model_args"] if isinstance(ckpt["model_args"], dict) else {}
    if not isinstance(args.get("n_head"), int):
        raise bad_value(KEY, str(path), f"{kind} whose model_args has no n_head (found {sorted(args)})")
    wte, wpe = _tensor(state, "wte.weight", path, kind), _tensor(state, "wpe.weight", path, kind)
    lm_head = state.pop("lm_head.weight", None)
    tied = lm_head is None or torch.equal(lm_head, wte)
    vocab = GPT2_VOCAB if wte.shape[0] == NANOGPT_PADDED_VOCAB else wte.shape[0]
    config = _config(path, kind, vocab_size=vocab, context_length=wpe.shape[0], n_embd=wte.shape[1],
                     n_layers=_layers(state, r"h\.(\d+)\."), n_heads=args["n_head"],
                     qkv_bias="h.0.attn.c_attn.bias" in state, bias="h.0.attn.c_attn.bias" in state,
                     tie_embeddings=tied, gelu="exact")

    def ours() -> dict[str, torch.Tensor]:
        out = {} if tied else {"lm_head.weight": lm_head[:vocab]}
        for name, tensor in state.items():
            match = _NANOGPT_NAME.match(name)
            module = match and _NANOGPT_BLOCK.get(match.group(2))
            out[f"blocks.{match.group(1)}.{module}.{match.group(3)}" if module else name] = tensor
        out["wte.weight"] = wte[:vocab]  # without the padding rows
        return out  # wpe, ln_f keep their names; unknown ones stay to be reported

    return PeerCheckpoint(kind, config, ours)


# ---- llm.c ------------------------------------------------------------------------------------
def _llmc_arrays(maxT: int, Vp: int, L: int, C: int) -> list[tuple[str, tuple[int, ...]]]:
    """(our name, shape) of llm.c's parameter arrays in file order; ``{}`` takes the layer."""
    per_layer = [("blocks.{}.ln_1.weight", (C,)), ("blocks.{}.ln_1.bias", (C,)),
                 ("blocks.{}.attn.qkv.weight", (3 * C, C)), ("blocks.{}.attn.qkv.bias", (3 * C,)),
                 ("blocks.{}.attn.proj.weight", (C, C)), ("blocks.{}.attn.proj.bias", (C,)),
                 ("blocks.{}.ln_2.weight", (C,)), ("blocks.{}.ln_2.bias", (C,)),
                 ("blocks.{}.mlp.fc.weight", (4 * C, C)), ("blocks.{}.mlp.fc.bias", (4 * C,)),
                 ("blocks.{}.mlp.proj.weight", (C, 4 * C)), ("blocks.{}.mlp.proj.bias", (C,))]
    return [("wte.weight", (Vp, C)), ("wpe.weight", (maxT, C)),
            *((name, (L, *shape)) for name, shape in per_layer),
            ("ln_f.weight", (C,)), ("ln_f.bias", (C,))]


def _llmc(path: Path, head: bytes) -> PeerCheckpoint:
    kind = "llm.c model file"
    if len(head) < 4 * LLMC_HEADER_INTS:
        raise bad_value(KEY, str(path), f"{kind} cut short inside its 1024-byte header")
    version, maxT, V, L, H, C, Vp = (int(x) for x in np.frombuffer(head, dtype="<i4")[1:8])
    if version not in LLMC_VERSIONS:
        raise bad_value(KEY, str(path), f"{kind} of version {version}; this reader knows 3 (float32) and "
                        "5 (bfloat16), what llm.c's train_gpt2.py and train_gpt2.cu write")
    if min(maxT, V, L, H, C, Vp) < 1 or Vp < V or C % H:
        raise bad_value(KEY, str(path), f"{kind} with an impossible header (maxT={maxT}, V={V}, Vp={Vp}, "
                        f"L={L}, NH={H}, C={C})")
    dtype = LLMC_VERSIONS[version]
    arrays = _llmc_arrays(maxT, Vp, L, C)
    count = sum(int(np.prod(shape)) for _, shape in arrays)
    expected = 4 * LLMC_HEADER_INTS + count * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise bad_value(KEY, str(path), f"{kind} of {size:,} bytes, but its header (L={L}, C={C}, Vp={Vp}, "
                        f"maxT={maxT}, {dtype}) needs {expected:,}: truncated or not one file")
    config = _config(path, kind, vocab_size=V, context_length=maxT, n_embd=C, n_layers=L, n_heads=H,
                     qkv_bias=True, bias=True, tie_embeddings=True, gelu="tanh")

    def ours() -> dict[str, torch.Tensor]:
        raw = np.fromfile(path, dtype="<i2" if dtype == torch.bfloat16 else "<f4", count=count,
                          offset=4 * LLMC_HEADER_INTS)
        flat = torch.from_numpy(raw)
        flat = flat.view(torch.bfloat16).float() if dtype == torch.bfloat16 else flat
        out, start = {}, 0
        for name, shape in arrays:
            n = int(np.prod(shape))
            tensor = flat[start:start + n].view(shape)
            start += n
            if "{}" in name:
                out.update((name.format(i), tensor[i]) for i in range(L))
            else:
                out[name] = tensor
        out["wte.weight"] = out["wte.weight"][:V]  # padded rows are never scored
        return out

    return PeerCheckpoint(kind, config, ours)


# ---- LLMs from scratch ------------------------------------------------------------------------
# GPTModel's names -> ours; W_query/W_key/W_value are stacked into attn.qkv
_SCRATCH_TOP = {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight",
                "final_norm.scale": "ln_f.weight", "final_norm.shift": "ln_f.bias",
                "out_head.weight": "lm_head.weight"}
_SCRATCH_BLOCK = {"norm1.scale": "ln_1.weight", "norm1.shift": "ln_1.bias",
                  "norm2.scale": "ln_2.weight", "norm2.shift": "ln_2.bias",
                  "att.out_proj.weight": "attn.proj.weight", "att.out_proj.bias": "attn.proj.bias",
                  "ff.layers.0.weight": "mlp.fc.weight", "ff.layers.0.bias": "mlp.fc.bias",
                  "ff.layers.2.weight": "mlp.proj.weight", "ff.layers.2.bias": "mlp.proj.bias"}
_SCRATCH_NAME = re.compile(r"trf_blocks\.(\d+)\.(.+)$")
_QKV = ("W_query", "W_key", "W_value")
_QKV_MODULES = tuple(f"att.{w}." for w in _QKV)
_RELEASES = ("gpt2_small", "gpt2_medium", "gpt2_large", "gpt2_xl")  # sizes whose head count a width and depth imply


def _from_scratch(path: Path, state: dict, requested: dict, explicit: set[str]) -> PeerCheckpoint:
    kind = "LLMs-from-scratch GPTModel"
    state = {_strip(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not re.fullmatch(r"trf_blocks\.\d+\.att\.mask", k)}  # causal masks
    wte, wpe = _tensor(state, "tok_emb.weight", path, kind), _tensor(state, "pos_emb.weight", path, kind)
    head = _tensor(state, "out_head.weight", path, kind)
    if head.shape[0] != wte.shape[0] or "out_head.bias" in state:
        raise bad_value(KEY, str(path), f"{kind} whose out_head has {head.shape[0]} outputs, not the vocabulary's "
                        f"{wte.shape[0]}: a classifier (the book's chapter 6), which writes no text")
    n_embd, n_layers = wte.shape[1], _layers(state, r"trf_blocks\.(\d+)\.")
    config = _config(path, kind, vocab_size=wte.shape[0], context_length=wpe.shape[0], n_embd=n_embd,
                     n_layers=n_layers, n_heads=_unstored_heads(path, n_embd, n_layers, requested, explicit),
                     qkv_bias="trf_blocks.0.att.W_query.bias" in state,
                     bias="trf_blocks.0.att.out_proj.bias" in state, tie_embeddings=False, gelu="tanh")

    def ours() -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in state.items():
            match = _SCRATCH_NAME.match(name)
            if name in _SCRATCH_TOP:
                out[_SCRATCH_TOP[name]] = tensor
            elif match and match.group(2) in _SCRATCH_BLOCK:
                out[f"blocks.{match.group(1)}.{_SCRATCH_BLOCK[match.group(2)]}"] = tensor
            elif not (match and match.group(2).startswith(_QKV_MODULES)):
                out[name] = tensor  # unknown: left for the loader to report
        for i in range(n_layers):
            for param in ("weight", "bias") if config.qkv_bias else ("weight",):
                parts = [_tensor(state, f"trf_blocks.{i}.att.{w}.{param}", path, kind) for w in _QKV]
                out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(parts)  # q, k, v: our split order
        return out

    return PeerCheckpoint(kind, config, ours)


def _unstored_heads(path: Path, n_embd: int, n_layers: int, requested: dict, explicit: set[str]) -> int:
    """The number of heads of a file that does not store it: the user's ``model.n_heads``, else
    the GPT-2 release of the same width and depth, else the model config's (logged, as a guess)."""
    release = next((name for name in _RELEASES
                    if (SIZES[name]["n_embd"], SIZES[name]["n_layers"]) == (n_embd, n_layers)), None)
    if "n_heads" in explicit:
        heads, source = requested["n_heads"], None
    elif release is not None:
        heads, source = SIZES[release]["n_heads"], f"GPT-2 {release.removeprefix('gpt2_')}'s, of the same width and depth"
    else:
        heads, source = requested["n_heads"], "model.n_heads of the model config"
    if n_embd % heads:
        raise bad_value("model.n_heads", heads, f"a divisor of n_embd={n_embd}: {path} (LLMs from scratch) does not "
                        "store its number of heads, so give the one it was trained with")
    if source:
        log.info("%s: LLMs-from-scratch files do not store the number of heads; using n_heads=%d (%s). "
                 "Set model.n_heads if it was trained with another.", path, heads, source)
    return heads


def _config(path: Path, kind: str, **fields) -> GPTConfig:
    """The GPTConfig the tensors describe; an inconsistent file is one line naming init.path."""
    try:
        return GPTConfig(**fields)
    except ValueError as err:  # ConfigError from GPTConfig's checks, worded for model.* keys
        raise bad_value(KEY, str(path), f"{kind} whose tensors describe no valid GPT-2 ({err})") from None
