"""The ``init`` config group: where a model's starting weights come from.

``init=scratch`` builds the ``model`` config with random weights. ``init=openai_124m``,
``openai_355m``, ``openai_774m`` and ``openai_1558m`` start from OpenAI's released GPT-2
weights, and ``init=checkpoint`` from ``init.path``: an export folder
(``hf_io.save_pretrained``), a transformers GPT-2 folder, a ``.safetensors`` file with
``config.json`` beside it, a Lightning ``.ckpt`` of this project, or a checkpoint of nanoGPT,
llm.c or "LLMs from scratch", recognised by its content (``peers``).

Weights decide the architecture. Model keys the user set explicitly must agree with them;
the others are replaced without a word. ``model.dropout`` is always the caller's.

Released weights are looked for, in order: ``init.path``, ``$GPT_LIGHTNING_WEIGHTS_DIR/<repo>/``
(checked against the pinned sha256), the cache ``<cache>/weights/<repo>/``, and only then
downloaded from ``$GPT_LIGHTNING_HF_ENDPOINT`` (else ``$HF_ENDPOINT``, else the Hugging
Face hub) at the pinned revision, checked by size and sha256 (see ``download``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from gpt_lightning.config.legacy import load_checkpoint
from gpt_lightning.config.schemas import CHECKPOINT_KINDS, RELEASED_INITS, InitConfig, parse
from gpt_lightning.download import DownloadError, Source, cache_dir, download, verify
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.weights.hf_io import load_pretrained, read_config
from gpt_lightning.weights.peers import PeerCheckpoint, read_peer
from gpt_lightning.lora import merge_lora_state
from gpt_lightning.model import GPT, GPTConfig

WEIGHTS_DIR_ENV = "GPT_LIGHTNING_WEIGHTS_DIR"
ENDPOINT_ENV = "GPT_LIGHTNING_HF_ENDPOINT"
DEFAULT_ENDPOINT = "https://huggingface.co"

# GPTConfig fields that fix the shapes and maths of the weights (not dropout, nor
# init_scheme, which only draws random weights).
ARCH_KEYS = ("vocab_size", "context_length", "n_embd", "n_layers", "n_heads",
             "qkv_bias", "bias", "layer_norm_epsilon", "tie_embeddings", "gelu")


@dataclass(frozen=True)
class HubWeights:
    """A released checkpoint on the hub: repository, pinned commit, expected weights file."""

    repo: str
    revision: str
    sha256: str | None  # LFS oid of model.safetensors
    size: int | None  # bytes of model.safetensors
    config: GPTConfig  # the architecture its config.json must describe

    def url(self, file: str) -> str:
        return f"{hub_endpoint()}/{self.repo}/resolve/{self.revision}/{file}"

    def weights_source(self) -> Source:
        return Source(self.url("model.safetensors"), self.sha256, self.size)


# Hashes and sizes are the hub's LFS pointers for model.safetensors at these commits.
HUB_WEIGHTS: dict[str, HubWeights] = {
    "openai_124m": HubWeights(
        "openai-community/gpt2", "607a30d783dfa663caf39e06633721c8d4cfcd7e",
        "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707", 548_105_171,
        GPTConfig.from_name("gpt2_small")),
    "openai_355m": HubWeights(
        "openai-community/gpt2-medium", "6dcaa7a952f72f9298047fd5137cd6e4f05f41da",
        "fc5a354a19255ad494f3d71549390baca1ccf61d1d822b9408971705c687c9cd", 1_519_984_962,
        GPTConfig.from_name("gpt2_medium")),
    "openai_774m": HubWeights(
        "openai-community/gpt2-large", "32b71b12589c2f8d625668d2335a01cac3249519",
        "5f47f3e12f91cd33b662ce7e433b6150ad5512b5884a2cee961b50e9c3bbebce", 3_247_159_078,
        GPTConfig.from_name("gpt2_large")),
    "openai_1558m": HubWeights(
        "openai-community/gpt2-xl", "15ea56dee5df4983c59b2538573817e1667135e2",
        "0f8b28eb05a8075f48b61b6f35332978c74fc7763fa9fb4051a1c30511736a6a", None,  # size not found; sha256 checks
        GPTConfig.from_name("gpt2_xl")),
}
assert tuple(HUB_WEIGHTS) == RELEASED_INITS, "each released init (config.schemas) has its pinned files here"


@dataclass(frozen=True)
class _Weights:
    """Weights found on disk: the architecture stored with them and how to load them."""

    label: str  # how error messages name them, e.g. "init=openai_124m"
    config: GPTConfig
    load: Callable[[GPTConfig], GPT]


def hub_endpoint() -> str:
    """Base URL of the hub (or a mirror) that serves ``<repo>/resolve/<revision>/<file>``."""
    endpoint = os.environ.get(ENDPOINT_ENV) or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return endpoint.rstrip("/")


def build_model(init: InitConfig | Mapping, model: GPTConfig | Mapping, explicit: Iterable[str] = (), *,
                seed: int | None = None, tokenizer_vocab: int | None = None,
                load_safetensors: Callable[[Path, GPTConfig], GPT] = load_pretrained) -> GPT:
    """The model to start from: random for ``init=scratch``, else loaded weights.

    ``model`` holds the requested GPTConfig fields; ``explicit`` names the model keys the
    user set on the command line (they must agree with loaded weights). ``seed`` seeds the
    random weights; ``tokenizer_vocab`` is the vocabulary the model must cover.
    ``load_safetensors(path, config)`` builds the model from a GPT-2-layout safetensors file
    or folder (e.g. ``quantize.load_quantized``, which never holds the fp32 model).
    """
    if seed is not None:
        torch.manual_seed(seed)  # init=scratch: the same seed gives the same initial weights
    name, path = _init_settings(init)
    requested = _requested_model(model)
    if name == "scratch":
        built = GPT(GPTConfig(**requested))
    else:
        if name in HUB_WEIGHTS:  # a conflicting override fails before a download of gigabytes
            _merge(f"init={name}", HUB_WEIGHTS[name].config, requested, explicit)
        weights = (_hub_weights(name, path, load_safetensors) if name in HUB_WEIGHTS
                   else _checkpoint_weights(path, load_safetensors, requested, explicit))
        built = weights.load(_merge(weights.label, weights.config, requested, explicit))
    if tokenizer_vocab is not None and built.config.vocab_size < tokenizer_vocab:
        raise bad_value("model.vocab_size", built.config.vocab_size,
                        f"at least {tokenizer_vocab:,}, the GPT-2 tokenizer's vocabulary")
    return built


def planned_config(init: InitConfig | Mapping, model: GPTConfig | Mapping, explicit: Iterable[str] = ()) -> GPTConfig:
    """The GPTConfig ``build_model`` would build, without downloading or loading weights
    (released inits answer from the table above; init=checkpoint reads the stored config).
    evaluate.py uses it to read and check its data before it loads any weights."""
    name, path = _init_settings(init)
    requested = _requested_model(model)
    if name == "scratch":
        return GPTConfig(**requested)
    if name in HUB_WEIGHTS:
        return _merge(f"init={name}", HUB_WEIGHTS[name].config, requested, explicit)
    weights = _checkpoint_weights(path, requested=requested, explicit=explicit)
    return _merge(weights.label, weights.config, requested, explicit)


# ---- config handling ------------------------------------------------------------------
def _init_settings(init_cfg: InitConfig | Mapping) -> tuple[str, Path | None]:
    """(init name, init.path or None), validated by the ``init`` schema."""
    init = init_cfg if isinstance(init_cfg, InitConfig) else parse(InitConfig, init_cfg, "init")
    return init.name, Path(str(init.path)).expanduser() if init.path else None


def _requested_model(model_cfg: GPTConfig | Mapping) -> dict:
    """Every GPTConfig field as the caller asked (defaults filled in, ``name`` dropped)."""
    if isinstance(model_cfg, GPTConfig):
        return model_cfg.to_dict()
    values = {k: v for k, v in dict(model_cfg).items() if k not in ("name", "_target_")}
    defaults = GPTConfig().to_dict()
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown model keys {unknown}; known keys: {sorted(defaults)}")
    return {**defaults, **values}


def _merge(label: str, stored: GPTConfig, requested: dict, explicit: Iterable[str]) -> GPTConfig:
    """The weights' architecture ``stored`` with the caller's dropout; explicit disagreements fail."""
    explicit = set(explicit or ())
    conflicts = [k for k in ARCH_KEYS if k in explicit and requested[k] != getattr(stored, k)]
    if conflicts:
        given = " and ".join(f"model.{k}={requested[k]}" for k in conflicts)
        found = ", ".join(f"{k}={getattr(stored, k)}" for k in conflicts)
        verb, override = ("conflicts", "override") if len(conflicts) == 1 else ("conflict", "overrides")
        raise ConfigError(f"{given} {verb} with {label}, whose weights have {found}; "
                          f"drop the {override} or choose another init")
    return GPTConfig(**{**stored.to_dict(), "dropout": requested["dropout"]})


def _architecture_mismatch(found: GPTConfig, expected: GPTConfig) -> str | None:
    """None if both describe the same architecture, else the differences in words."""
    diffs = [f"{k}={getattr(found, k)} (not {getattr(expected, k)})"
             for k in ARCH_KEYS if getattr(found, k) != getattr(expected, k)]
    return ", ".join(diffs) or None


# ---- released weights ---------------------------------------------------------------------
def _hub_weights(name: str, path: Path | None, load: Callable = load_pretrained) -> _Weights:
    """The released weights of ``name``: from ``init.path``, the weights dir, the cache or the hub."""
    entry = HUB_WEIGHTS[name]
    if path:
        where = _existing_path(path, ".safetensors", f"a folder with config.json + model.safetensors "
                                                     f"from {entry.repo}, or that model.safetensors")
        label = f"init.path={str(path)!r}"
    else:
        where = _weights_dir_copy(entry) or _download(name, entry)
        label = str(where)
    stored = read_config(where) or entry.config  # a lone .safetensors has no config.json
    mismatch = _architecture_mismatch(stored, entry.config)
    if mismatch:
        raise ConfigError(f"{label} holds a GPT-2 with {mismatch}, so it is not init={name} "
                          f"({entry.repo}); use init=checkpoint for other weights")
    return _Weights(f"init={name}", entry.config, partial(load, where))


def _weights_dir_copy(entry: HubWeights) -> Path | None:
    """``$GPT_LIGHTNING_WEIGHTS_DIR/<repo>`` if it holds the weights (verified), else None."""
    root = os.environ.get(WEIGHTS_DIR_ENV)
    folder = Path(root).expanduser() / entry.repo if root else None
    if folder is None or not (folder / "model.safetensors").is_file():
        return None
    problem = verify(folder / "model.safetensors", entry.weights_source())
    if problem:
        raise ConfigError(f"{folder / 'model.safetensors'} is not {entry.repo}@{entry.revision} "
                          f"({problem}); replace it or unset {WEIGHTS_DIR_ENV}")
    return folder


def _download(name: str, entry: HubWeights) -> Path:
    """Cached copy of the repo's config.json + model.safetensors, downloading what is missing."""
    folder = cache_dir() / "weights" / entry.repo
    try:
        download(Source(entry.url("config.json")), folder / "config.json", progress=False)
        download(entry.weights_source(), folder / "model.safetensors")
    except DownloadError as err:
        raise ConfigError(
            f"init={name} could not fetch {entry.repo} from {hub_endpoint()} ({err.reason}). "
            f"Run again once it is reachable (partial downloads resume), set {ENDPOINT_ENV} to a mirror, "
            f"or without internet put config.json + model.safetensors in ${WEIGHTS_DIR_ENV}/{entry.repo}/ "
            f"or pass init.path=/folder/with/them"
        ) from None
    return folder


# ---- checkpoints ------------------------------------------------------------------------------
def _checkpoint_weights(path: Path, load: Callable = load_pretrained, requested: dict | None = None,
                        explicit: Iterable[str] = ()) -> _Weights:
    """Weights and architecture from ``init.path`` of ``init=checkpoint``; ``requested`` and
    ``explicit`` (the model config, the keys the user set) only matter to files that lack a
    shape (LLMs-from-scratch ones store no number of heads)."""
    peer = read_peer(path, requested or GPTConfig().to_dict(), set(explicit or ())) if path.is_file() else None
    if peer is not None:
        return _Weights(f"init=checkpoint ({path}, {peer.kind})", peer.config, partial(_peer_model, peer, path))
    path = _existing_path(path, (".safetensors", ".ckpt"), CHECKPOINT_KINDS)
    if path.suffix == ".ckpt":
        return _lightning_weights(path)
    config = read_config(path)
    if config is None:
        raise bad_value("init.path", str(path), "no config.json beside the weights to give their shapes; "
                        "copy it there from where the weights came from")
    return _Weights(f"init=checkpoint ({path})", config, partial(load, path))


def _lightning_weights(path: Path) -> _Weights:
    """A Lightning checkpoint of this project: ``model.*`` weights + hyper_parameters.model_config.

    It is a pickle, so it runs code when read: only start from checkpoints you trust.
    """
    ckpt, config = read_checkpoint(path, "init.path")
    # "model." is the LightningModule attribute; "_orig_mod." appears when it was torch.compile'd
    state = {k.removeprefix("model.").removeprefix("_orig_mod."): v
             for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    state = merge_lora_state(state)  # a LoRA fine-tune loads as plain GPT-2 weights
    return _Weights(f"init=checkpoint ({path})", config, partial(_model_from_state, state, path))


def read_checkpoint(path: Path, key: str) -> tuple[dict, GPTConfig]:
    """(checkpoint dict, its model's GPTConfig) of a Lightning ``.ckpt`` of this project.

    Memory-mapped, not read whole. Anything else (missing, a folder, truncated, random bytes,
    another program's checkpoint) raises one line naming ``key``. It is a pickle, so it runs
    code when read: only load checkpoints you trust.
    """
    path = Path(path)
    if path.is_dir():
        raise bad_value(key, str(path), "a folder, not a checkpoint file; give a .ckpt such as "
                        "<run>/checkpoints/last.ckpt")
    if not path.is_file():
        raise bad_value(key, str(path), "no such file; give a .ckpt such as <run>/checkpoints/last.ckpt")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; mmap needs one
        raise bad_value(key, str(path), "not a Lightning checkpoint (not a torch.save zip archive: "
                        "truncated, or another kind of file)")
    try:
        ckpt = load_checkpoint(path)  # old module paths mapped
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise bad_value(key, str(path), f"cannot be read as a Lightning checkpoint "
                        f"({' '.join(str(err).split())[:300]})") from None
    hparams = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    if "model_config" not in hparams or "state_dict" not in ckpt:
        raise bad_value(key, str(path), "not a checkpoint of this project: it needs a state_dict "
                        "and hyper_parameters['model_config']")
    return ckpt, GPTConfig.from_dict(dict(hparams["model_config"]))


def _peer_model(peer: PeerCheckpoint, path: Path, config: GPTConfig) -> GPT:
    """A GPT of ``config`` holding the weights of a nanoGPT, llm.c or LLMs-from-scratch file."""
    return _model_from_state(peer.state(), path, config)


def _model_from_state(state: dict[str, torch.Tensor], path: Path, config: GPTConfig) -> GPT:
    """A GPT of ``config`` holding ``state`` (our parameter names); mismatches fail in one line."""
    model = GPT(config)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise bad_value("init.path", str(path), f"its weights do not fit {config}: "
                        f"{' '.join(str(err).split())}") from None
    tied = {"lm_head.weight"} if config.tie_embeddings else set()  # a tied head is wte.weight
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise bad_value("init.path", str(path), f"its weights do not fit {config}: missing "
                        f"{missing[:8]}, unexpected {result.unexpected_keys[:8]}")
    return model


def _existing_path(path: Path, suffixes: str | tuple[str, ...], kinds: str) -> Path:
    """``path`` if it is a folder with model.safetensors or a file with one of ``suffixes``."""
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise bad_value("init.path", str(path), f"no model.safetensors in it (found {found}); expected {kinds}")
        return path
    if not path.exists():
        raise bad_value("init.path", str(path), f"no such file or folder; expected {kinds}")
    if not path.name.endswith(suffixes):
        raise bad_value("init.path", str(path), f"expected {kinds}")
    return path
