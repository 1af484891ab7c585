"""The one strict parser, and the typed schemas of the training run's config groups.

The other jobs' schemas live beside this module, one per job (config/generate.py, serve.py,
evaluate.py; config/tasks.py the benchmark settings they share with ``callbacks.eval``).

Every group in ``conf/`` names the schema (or the class) it builds with ``_target_``. A value
is accepted only if it has the annotated type: a bool is ``true``/``false`` (not ``off`` or
``maybe``), an int is not a float or a bool, ``X | None`` also takes ``null``, a
``Literal`` takes one of its choices. Range checks live in each schema's ``__post_init__``.
Every problem is one :class:`ConfigError` line naming the key, the value and what works.

This module is plain Python: it reads mappings, never Hydra's global state, so the library
can be driven from a script as well as from ``train.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import torch

from gpt_lightning.config.legacy import current_path, current_targets
from gpt_lightning.config.tasks import EvalConfig, JudgeConfig
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.model import GPTConfig

TARGET = "_target_"


# ---- the strict parser ----------------------------------------------------------------------
def describe(hint: Any) -> str:
    """A type annotation in words, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in args if a is not type(None)]
        words = " or ".join(parts)
        return f"{words} or null" if type(None) in args else words
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(hint))
    return getattr(hint, "__name__", str(hint))


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (int -> float, list -> tuple), or a ConfigError."""
    ok, converted = _convert(key, value, hint)
    if not ok:
        raise bad_value(key, value, describe(hint))
    return converted


def _convert(key: str, value: Any, hint: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return True, value
    if hint is type(None):
        return value is None, None
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin in (Union, types.UnionType):
        for arg in args:  # int before float: 3 stays an int where both are allowed
            ok, converted = _convert(key, value, arg)
            if ok:
                return True, converted
        return False, value
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        item = args[0] if args else Any
        return True, [check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return True, value
        if not isinstance(value, Mapping):
            return False, value
        return True, parse(hint, value, key)
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # annotations this parser does not model (paths, callables) pass as given


def _hints(target: Any) -> dict[str, tuple[Any, Any]]:
    """{name: (annotation, default or inspect.Parameter.empty)} of a dataclass or a callable."""
    if dataclasses.is_dataclass(target):
        hints = typing.get_type_hints(target)
        out = {}
        for f in dataclasses.fields(target):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty
            out[f.name] = (hints.get(f.name, Any), default)
        return out
    func = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # annotations that cannot be resolved: names only
        hints = {}
    params = inspect.signature(func).parameters
    return {name: (hints.get(name, Any), p.default) for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def parse(target: Any, values: Mapping, prefix: str) -> Any:
    """Check ``values`` against ``target`` (a dataclass or a callable's signature).

    A dataclass is built and returned; for a callable the checked keyword arguments are
    returned. Unknown keys, missing required keys and values of the wrong type are errors
    that name ``<prefix>.<key>``.
    """
    values = {k: v for k, v in dict(values).items() if k != TARGET}
    hints = _hints(target)
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    unknown = [] if _takes_any_keyword(target) else sorted(set(values) - set(hints))
    if unknown:
        key = unknown[0]
        where = f"a {prefix} key" if prefix else "a key of this command"
        raise bad_value(dotted(key), values[key], f"not {where}; known keys: {', '.join(sorted(hints))}")
    kwargs = {}
    for name, (hint, default) in hints.items():
        if name not in values:
            if default is inspect.Parameter.empty:
                raise bad_value(dotted(name), None, f"required ({describe(hint)})")
            continue
        kwargs[name] = check_value(dotted(name), values[name], hint)
    if dataclasses.is_dataclass(target):
        return target(**kwargs)
    return {**{k: v for k, v in values.items() if k not in hints}, **kwargs}  # **kwargs pass as given


def _takes_any_keyword(target: Any) -> bool:
    if dataclasses.is_dataclass(target):
        return False
    func = target.__init__ if inspect.isclass(target) else target
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())


def check_keys(node: Mapping, key: str) -> None:
    """The keys of ``node`` exist in the signature of its ``_target_`` (types are not checked:
    for classes of other libraries whose annotations this parser does not model)."""
    target = locate(node[TARGET], key)
    if _takes_any_keyword(target):
        return
    known = set(_hints(target))
    unknown = sorted(set(node) - known - {TARGET})
    if unknown:
        raise bad_value(f"{key}.{unknown[0]}", node[unknown[0]], f"not a {key} key; known keys: {', '.join(sorted(known))}")


def locate(path: str, key: str) -> Any:
    """The object a ``_target_`` names (``package.module.Name``)."""
    module, _, name = current_path(str(path)).rpartition(".")  # an old run's path: where it lives now
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise bad_value(f"{key}._target_", path, "an importable module.Name") from None


def build(node: Mapping, key: str, **extra) -> Any:
    """Build what ``node[_target_]`` names from the other keys, checked against its schema.

    ``extra`` are arguments the caller supplies (e.g. ``save_dir``) and the config does not.
    A ConfigError raised while building reaches the caller as it is (one line).
    """
    if TARGET not in node:
        raise bad_value(key, dict(node), f"a config with {TARGET}")
    target = locate(node[TARGET], key)
    checked = parse(target, {**node, **extra}, key)
    return checked if dataclasses.is_dataclass(target) else target(**checked)


# ---- schemas --------------------------------------------------------------------------------
def _positive(key: str, value, allow_none: bool = False, minimum: float = 1) -> None:
    if value is None and allow_none:
        return
    if value is None or value < minimum:
        raise bad_value(key, value, f"a number >= {minimum:g}" + (" or null" if allow_none else ""))


# The released GPT-2 weights ``init=<name>`` starts from (weights/sources.py pins each one's files).
RELEASED_INITS = ("openai_124m", "openai_355m", "openai_774m", "openai_1558m")
INITS = ("scratch", *RELEASED_INITS, "checkpoint")
PEER_KINDS = "nanoGPT's ckpt.pt, llm.c's gpt2_124M.bin or an LLMs-from-scratch model.pth"  # weights/peers.py
CHECKPOINT_KINDS = ("an export folder, a Hugging Face GPT-2 folder, a .safetensors file "
                    f"(config.json beside it), a Lightning .ckpt, {PEER_KINDS}")


@dataclass
class InitConfig:
    """``init``: where the starting weights come from (conf/init/*.yaml; weights/sources.py builds them)."""

    name: str = "scratch"  # scratch | openai_124m | openai_355m | openai_774m | openai_1558m | checkpoint
    path: str | None = None  # local weights: see CHECKPOINT_KINDS

    def __post_init__(self) -> None:
        if self.name not in INITS:
            raise bad_value("init", self.name, f"one of {list(INITS)}")
        if self.name == "scratch" and self.path:
            raise bad_value("init.path", str(self.path), "init=scratch starts from random weights; "
                            "drop init.path or use init=checkpoint")
        if self.name == "checkpoint" and not self.path:
            raise bad_value("init.path", None, f"init=checkpoint needs one: {CHECKPOINT_KINDS}")


@dataclass
class OptimConfig:
    """``optim``: AdamW with linear warmup + cosine decay (conf/optim/adamw.yaml)."""

    lr: float = 5e-4  # peak learning rate
    min_lr: float | None = None  # end of the cosine decay; None = lr / 10
    weight_decay: float = 0.1  # decoupled weight decay on the decayed group
    betas: tuple[float, float] | list[float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup: int | float = 0.1  # steps (int) or a fraction of all steps (float)
    decay_embeddings: bool = False  # also decay the token and position tables
    decay_all: bool = False  # decay every parameter (biases, LayerNorms, embeddings: "LLMs from scratch")

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise bad_value("optim.lr", self.lr, "a positive number such as 1e-3")
        self.min_lr = self.lr * 0.1 if self.min_lr is None else float(self.min_lr)
        if not 0 <= self.min_lr <= self.lr:
            raise bad_value("optim.min_lr", self.min_lr, f"between 0 and optim.lr={self.lr}")
        if self.weight_decay < 0:
            raise bad_value("optim.weight_decay", self.weight_decay, "a number >= 0")
        betas = list(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise bad_value("optim.betas", betas, "two numbers in [0, 1), e.g. [0.9, 0.95]")
        self.betas = [float(b) for b in betas]
        if not self.eps > 0:
            raise bad_value("optim.eps", self.eps, "a positive number such as 1e-8")
        if self.warmup < 0 or (isinstance(self.warmup, float) and self.warmup > 1):
            raise bad_value("optim.warmup", self.warmup, "a step count (int >= 0) or a fraction of all steps in [0, 1]")


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine",
              "64", "32", "16", "bf16", 64, 32, 16)


@dataclass
class TrainerConfig:
    """``trainer``: the Lightning Trainer arguments this project sets (conf/trainer/default.yaml).

    Any other Trainer argument given as ``+trainer.<name>=...`` goes into ``extra``, checked
    against the Trainer's signature.
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    precision: str | int | None = None
    max_epochs: int = 10
    max_steps: int = -1
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    tokens_per_step: int | None = None  # global batch in tokens; derives accumulate_grad_batches (config/batch_tokens.py)
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = 1
    log_every_n_steps: int = 5
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    num_sanity_val_steps: int = 0
    enable_progress_bar: bool = True
    deterministic: bool | Literal["warn"] = False
    benchmark: bool | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise bad_value("trainer.accelerator", self.accelerator, f"one of {', '.join(ACCELERATORS)}")
        if self.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise bad_value("trainer.accelerator", self.accelerator,
                            "no CUDA GPU is visible here; use trainer.accelerator=auto or cpu")
        self._check_devices()
        _positive("trainer.num_nodes", self.num_nodes)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise bad_value("trainer.precision", self.precision,
                            "null (bf16-mixed on GPUs and CPUs with native bf16, else 32-true) or one of "
                            "32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true")
        self._check_precision_runs_here()
        if self.max_epochs < -1 or self.max_epochs == 0:
            raise bad_value("trainer.max_epochs", self.max_epochs, "an integer >= 1 (or -1: no limit)")
        if self.max_steps < -1 or self.max_steps == 0:
            raise bad_value("trainer.max_steps", self.max_steps, "an integer >= 1 (or -1: no limit)")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise bad_value("trainer.gradient_clip_val", self.gradient_clip_val,
                            "a positive norm such as 1.0, or null for no clipping")
        _positive("trainer.accumulate_grad_batches", self.accumulate_grad_batches)
        _positive("trainer.tokens_per_step", self.tokens_per_step, allow_none=True)
        if self.tokens_per_step is not None and self.accumulate_grad_batches != 1:
            raise bad_value("trainer.accumulate_grad_batches", self.accumulate_grad_batches,
                            "1 (left to trainer.tokens_per_step, which derives it); set one of the two")
        _positive("trainer.log_every_n_steps", self.log_every_n_steps)
        _positive("trainer.check_val_every_n_epoch", self.check_val_every_n_epoch, allow_none=True)
        if self.num_sanity_val_steps < -1:
            raise bad_value("trainer.num_sanity_val_steps", self.num_sanity_val_steps, "an integer >= 0 (or -1: all)")
        for key in ("val_check_interval", "limit_train_batches", "limit_val_batches", "overfit_batches"):
            value = getattr(self, key)
            least = 0 if key in ("limit_val_batches", "overfit_batches") else 1  # 0 turns those off
            if isinstance(value, float) and not (0 < value <= 1 or (least == 0 and value == 0)):
                raise bad_value(f"trainer.{key}", value, "a fraction of an epoch in (0, 1] or a number of batches (int)")
            if isinstance(value, int) and value < least:
                raise bad_value(f"trainer.{key}", value, f"a number of batches >= {least} or a fraction in (0, 1]")
        self._check_extra()

    def _check_devices(self) -> None:
        d = self.devices
        if isinstance(d, list):
            if not d or any(i < 0 for i in d):
                raise bad_value("trainer.devices", d, "a non-empty list of device indices such as [0, 1]")
        elif isinstance(d, str):
            if d != "auto":
                raise bad_value("trainer.devices", d, "a number of devices (1, 2, ... or -1 for all), a list or auto")
        elif d == 0 or d < -1:
            raise bad_value("trainer.devices", d, "a number of devices >= 1 (or -1 for every GPU, or auto)")
        count = torch.cuda.device_count()
        if self.accelerator in ("gpu", "cuda") and isinstance(d, int) and d > count:
            raise bad_value("trainer.devices", d, f"at most the {count} GPU(s) visible here")

    def _check_extra(self) -> None:
        if not self.extra:
            return
        import lightning as L

        params = inspect.signature(L.Trainer.__init__).parameters
        for key in self.extra:
            if key not in params or key in ("strategy", "callbacks", "logger", "plugins", "default_root_dir"):
                raise bad_value(f"trainer.{key}", self.extra[key], "not a Trainer argument this project passes on "
                                "(`python train.py --cfg job` lists the trainer keys)")

    @classmethod
    def from_node(cls, node: Mapping) -> "TrainerConfig":
        """The schema's own keys are type-checked; any other key is an extra Trainer argument."""
        own = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in node.items() if k != TARGET}
        extra = {k: v for k, v in values.items() if k not in own}
        config = parse(cls, {k: v for k, v in values.items() if k in own}, "trainer")
        config.extra = extra
        config._check_extra()
        return config

    def _check_precision_runs_here(self) -> None:
        problem = self.precision is not None and _precision_problem(self.precision, str(self.accelerator))
        if problem:
            raise bad_value("trainer.precision", self.precision, problem)

    def kwargs(self) -> dict:
        """Keyword arguments for ``lightning.Trainer`` (precision null resolved for this machine)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "tokens_per_step")}
        out["precision"] = resolve_precision(self.precision, self.accelerator)
        return {**out, **self.extra}

    def multi_process(self) -> bool:
        """Whether this trainer runs more than one process (DDP/FSDP)."""
        if self.num_nodes > 1:
            return True
        if isinstance(self.devices, list):
            return len(self.devices) > 1
        if self.devices in ("auto", -1):
            return self.accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
        return self.devices > 1


def _precision_problem(precision, accelerator: str) -> str | None:
    """Why ``precision`` cannot run here (a package it needs is missing), or None."""
    import importlib.util

    if precision == "transformer-engine" and importlib.util.find_spec("transformer_engine") is None:
        return ("needs NVIDIA's transformer_engine package, which is not installed (pip install "
                "'transformer-engine[pytorch]' on a CUDA machine); or use bf16-mixed")
    return None


def resolve_precision(precision, accelerator: str = "auto"):
    """``trainer.precision: null`` picks bf16-mixed on GPUs and CPUs with native bf16, else
    32-true (gpt_lightning/precision.py), and logs the choice."""
    if precision is not None:
        return precision
    from gpt_lightning.precision import choose_precision

    chosen, why = choose_precision(str(accelerator))
    logging.getLogger("gpt_lightning").info(f"trainer.precision=null -> {chosen} ({why}); set "
                                            "trainer.precision=32-true or bf16-mixed to choose")
    return chosen


@dataclass
class StrategyConfig:
    """``strategy=auto`` (DDP when several processes) or ``strategy=single`` (one process)."""

    name: Literal["auto", "single"] = "auto"


@dataclass
class DDPConfig:
    """``strategy=ddp``: one process per device, gradients all-reduced each step."""

    name: Literal["ddp"] = "ddp"
    process_group_backend: Literal["nccl", "gloo"] | None = None
    find_unused_parameters: bool = False
    gradient_as_bucket_view: bool = True
    static_graph: bool = False
    timeout_s: float = 1800.0  # how long a rank waits for a silent peer before it stops (one line)

    def __post_init__(self) -> None:
        _positive("strategy.timeout_s", self.timeout_s)


@dataclass
class FSDPConfig:
    """``strategy=fsdp``: weights, gradients and optimizer state sharded, one block per unit."""

    name: Literal["fsdp"] = "fsdp"
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"] = "FULL_SHARD"
    state_dict_type: Literal["full", "sharded"] = "full"
    cpu_offload: bool = False
    timeout_s: float = 1800.0  # how long a rank waits for a silent peer before it stops (one line)

    def __post_init__(self) -> None:
        _positive("strategy.timeout_s", self.timeout_s)


@dataclass
class CheckpointConfig:
    every_n_train_steps: int | None = None  # also write last.ckpt every N optimizer steps
    async_write: bool = True  # write checkpoints in a background thread (training waits only for a host copy)
    every_n_minutes: float | None = 10.0  # after a validation, write last.ckpt only this often; null = every time

    def __post_init__(self) -> None:
        _positive("callbacks.checkpoint.every_n_train_steps", self.every_n_train_steps, allow_none=True)
        if self.every_n_minutes is not None and not self.every_n_minutes >= 0:
            raise bad_value("callbacks.checkpoint.every_n_minutes", self.every_n_minutes,
                            "a number of minutes >= 0 (0 or null = after every validation)")


@dataclass
class SamplesConfig:
    enabled: bool = True
    prompt: str = "Every effort moves you"
    instruct: bool = False
    max_new_tokens: int = 30
    temperature: float = 0.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        _positive("callbacks.samples.max_new_tokens", self.max_new_tokens)
        _positive("callbacks.samples.temperature", self.temperature, minimum=0)
        _positive("callbacks.samples.top_k", self.top_k, allow_none=True, minimum=0)


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # validations without a better val/loss before stopping

    def __post_init__(self) -> None:
        _positive("callbacks.early_stopping.patience", self.patience, allow_none=True)


@dataclass
class TrainEvalConfig:
    batches: int | None = 0  # training batches scored in eval mode after each validation; 0 = off, null = all

    def __post_init__(self) -> None:
        _positive("callbacks.train_eval.batches", self.batches, allow_none=True, minimum=0)


@dataclass
class CallbacksConfig:
    """``callbacks``: checkpoints, samples, early stopping (conf/callbacks/default.yaml)."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    train_eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)  # benchmark scores during training


@dataclass
class PerfConfig:
    """``perf``: how the model runs (not what it computes)."""

    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False  # recompute each block in backward
    mfu_peak_tflops: float | None = None  # peak TFLOP/s per device for train/mfu; None = look up the GPU

    def __post_init__(self) -> None:
        if self.mfu_peak_tflops is not None and not self.mfu_peak_tflops > 0:
            raise bad_value("perf.mfu_peak_tflops", self.mfu_peak_tflops, "a positive number or null")


LORA_TARGETS = ("qkv", "proj", "fc")


@dataclass
class LoRAConfig:
    rank: int = 0  # 0 = full fine-tuning
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def __post_init__(self) -> None:
        _positive("finetune.lora.rank", self.rank, minimum=0)
        if not self.alpha > 0:
            raise bad_value("finetune.lora.alpha", self.alpha, "a positive number such as 16")
        if not 0 <= self.dropout < 1:
            raise bad_value("finetune.lora.dropout", self.dropout, "a probability in [0, 1)")
        if not self.targets or set(self.targets) - set(LORA_TARGETS):
            raise bad_value("finetune.lora.targets", self.targets, f"a non-empty list among {list(LORA_TARGETS)}")


@dataclass
class ResponsesConfig:
    enabled: bool = True  # after training, answer the test split greedily
    file: str = "responses.jsonl"
    max_new_tokens: int = 256
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not self.file or "/" in self.file:
            raise bad_value("finetune.responses.file", self.file, "a file name inside the run folder")
        _positive("finetune.responses.max_new_tokens", self.max_new_tokens)
        _positive("finetune.responses.batch_size", self.batch_size)


@dataclass
class DPOConfig:
    beta: float = 0.1  # strength of the pull towards the reference (the DPO paper's beta)

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise bad_value("finetune.dpo.beta", self.beta, "a positive number such as 0.1")



@dataclass
class FinetuneConfig:
    """``finetune``: what fine-tuning adds to a training run (the task, freezing, LoRA, DPO, the test-split answers)."""

    lora: LoRAConfig = field(default_factory=LoRAConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    task: Literal["instruct", "classification", "dpo"] = "instruct"  # set by the task group (task=...)
    trainable_blocks: int | None = None  # train only the last N blocks, ln_f and the head; None = all
    dpo: DPOConfig = field(default_factory=DPOConfig)

    def __post_init__(self) -> None:
        _positive("finetune.trainable_blocks", self.trainable_blocks, allow_none=True, minimum=0)
        if self.lora.rank and self.trainable_blocks is not None:
            raise bad_value("finetune.trainable_blocks", self.trainable_blocks,
                            f"null with LoRA (finetune.lora.rank={self.lora.rank} already decides what trains); "
                            "set one of them")


@dataclass
class RunConfig:
    """The top-level keys of train.yaml / finetune.yaml that are not groups."""

    seed: int = 123
    ckpt_path: str | None = None
    export: bool = True
    name: str | None = None  # run.name: the run folder's name, the same on every node (conf/base.yaml)


def missing_keys(values: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose value is still Hydra's ``???`` (required, not given)."""
    if isinstance(values, Mapping):
        return [k for key, v in values.items() for k in missing_keys(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if values == "???" else []


def require_given(values: Mapping) -> None:
    found = missing_keys(values)
    if found:
        raise bad_value(found[0], "???", "required: set it on the command line, e.g. "
                        f"{found[0]}=..." + (" (a file, a folder or a glob)" if found[0].endswith("path") else ""))


def split_known(values: Mapping, known: Sequence[str], where: str) -> dict:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{unknown[0]}={values[unknown[0]]!r} is invalid: not a key of {where}; "
                          f"known top-level keys: {', '.join(sorted(known))}")
    return dict(values)


# ---- a whole run --------------------------------------------------------------------------
STRATEGIES = {"auto": StrategyConfig, "single": StrategyConfig, "ddp": DDPConfig, "fsdp": FSDPConfig}
TRAIN_KEYS = ("model", "init", "data", "optim", "trainer", "strategy", "logger", "callbacks", "perf",
              "seed", "ckpt_path", "export", "card", "finetune", "judge", "run")


def _run_name(node) -> str | None:
    """``run: {name: ...}`` (conf/base.yaml): the run folder's name on every node."""
    node = dict(node or {})
    if set(node) - {"name"}:
        key = sorted(set(node) - {"name"})[0]
        raise bad_value(f"run.{key}", node[key], "not a key of run (run.name is)")
    name = node.get("name")
    if name is not None and (not str(name).strip() or "/" in str(name) or str(name) in (".", "..")):
        raise bad_value("run.name", name, "a folder name without '/', such as run.name=gpt2-124m-a")
    return None if name is None else str(name)


@dataclass
class CardConfig:
    """``card``: the model card of the export (export/README.md)."""

    license: str = "mit"  # the license on the Hugging Face hub
    tags: list[str] = field(default_factory=list)  # extra hub tags


@dataclass
class TrainSpec:
    """Everything train.py / finetune.py were asked to do, checked and typed.

    Built by :func:`train_spec` from the composed config before anything heavy starts
    (no download, no tokenizing, no Trainer); a bad value anywhere is one ConfigError.
    """

    model: GPTConfig  # the requested architecture (loaded weights may replace it)
    init: InitConfig
    data: Any  # the LightningDataModule (built, not yet prepared)
    optim: OptimConfig
    trainer: TrainerConfig
    strategy: StrategyConfig | DDPConfig | FSDPConfig
    logger: dict | None  # {name: {_target_: ..., ...}} of each tracker (loggers.py), None for no logger
    callbacks: CallbacksConfig
    perf: PerfConfig
    run: RunConfig
    finetune: FinetuneConfig | None = None  # only for fine-tuning runs
    card: CardConfig = field(default_factory=CardConfig)
    judge: JudgeConfig | None = None  # finetune.py's judge.enabled=true, else None

    @property
    def seed(self) -> int:
        return self.run.seed


def _group(values: Mapping, key: str, default: type) -> Any:
    node = values.get(key)
    if node is None:
        return default()
    if not isinstance(node, Mapping):
        raise bad_value(key, node, describe(default))
    target = locate(node[TARGET], key) if TARGET in node else default
    if target is not default and not (isinstance(target, type) and issubclass(target, default)):
        raise bad_value(f"{key}._target_", node[TARGET], f"{default.__module__}.{default.__name__}")
    return parse(target, node, key)


def _loggers(node: Any) -> dict | None:
    """The ``logger`` node: ``{name: {_target_: ..., ...}}`` per tracker (``logger=[tensorboard,csv]``)."""
    if not node:
        return None
    if not isinstance(node, Mapping) or TARGET in node or not all(isinstance(v, Mapping) for v in node.values()):
        raise bad_value("logger", node, "entries of the form {name: {_target_: ..., ...}}; pick options with "
                        "logger=tensorboard, logger=[tensorboard,csv], ...")
    for name, entry in node.items():
        if TARGET not in entry:
            raise bad_value(f"logger.{name}", dict(entry), "a tracker config with _target_")
        check_keys(entry, f"logger.{name}")
    return {name: dict(entry) for name, entry in node.items()}


def _check_tokens_per_step(spec: TrainSpec) -> None:
    """trainer.tokens_per_step divides evenly, checked now where the ranks are known (the job checks again)."""
    from gpt_lightning.config.batch_tokens import accumulation, static_world_size

    world, t = static_world_size(spec.trainer), spec.trainer
    max_length = getattr(spec.data, "max_length", None) or spec.model.context_length
    if t.tokens_per_step is not None and world is not None and hasattr(spec.data, "batch_size"):
        accumulation(t.tokens_per_step, spec.data.batch_size, max_length, world)


def train_spec(values: Mapping) -> TrainSpec:
    """Check a composed train/finetune config (plain dict, interpolations resolved)."""
    require_given(values)
    values = split_known(current_targets(values), TRAIN_KEYS, "this run")  # an old run's config.yaml too
    run = parse(RunConfig, {k: values[k] for k in ("seed", "ckpt_path", "export") if k in values}, "")  # top-level keys: named as typed (seed, export)
    run.name = _run_name(values.get("run"))
    model = parse(GPTConfig, values.get("model") or {}, "model")
    init = parse(InitConfig, values.get("init") or {"name": "scratch"}, "init")
    strategy_node = dict(values.get("strategy") or {"name": "auto"})
    name = strategy_node.get("name", "auto")
    if name not in STRATEGIES:
        raise bad_value("strategy", name, f"one of {', '.join(STRATEGIES)}")
    strategy = parse(STRATEGIES[name], strategy_node, "strategy")
    trainer = TrainerConfig.from_node(values.get("trainer") or {})
    if strategy.name == "single" and trainer.multi_process():
        raise bad_value("strategy", "single", f"trainer.devices={trainer.devices} needs strategy=ddp or strategy=fsdp")
    if strategy.name == "fsdp" and not torch.cuda.is_available():
        raise bad_value("strategy", "fsdp", "needs GPUs (trainer.accelerator=gpu); on CPUs use strategy=ddp")
    logger = _loggers(values.get("logger"))
    spec = TrainSpec(
        model=model, init=init, data=None, optim=_group(values, "optim", OptimConfig), trainer=trainer,
        strategy=strategy, logger=logger, callbacks=_group(values, "callbacks", CallbacksConfig),
        perf=_group(values, "perf", PerfConfig), run=run, card=_group(values, "card", CardConfig),
        finetune=_group(values, "finetune", FinetuneConfig) if values.get("finetune") is not None else None)
    if not isinstance(values.get("data"), Mapping):
        raise bad_value("data", values.get("data"), "a data config such as data=verdict")
    spec.data = build(values["data"], "data")  # light: downloads and tokenizing wait for prepare_data
    _check_tokens_per_step(spec)
    if spec.callbacks.eval.tasks and strategy.name == "fsdp":
        raise bad_value("callbacks.eval.tasks", spec.callbacks.eval.tasks, "not with strategy=fsdp (its ranks hold "
                        "shards of the weights); evaluate the export with evaluate.py instead")
    if spec.finetune is not None and values.get("judge") is not None:
        judge = parse(JudgeConfig, values["judge"], "judge")
        if judge.enabled and not spec.finetune.responses.enabled:
            raise bad_value("judge.enabled", True,
                            "needs finetune.responses.enabled=true (the judge scores those responses)")
        spec.judge = judge if judge.enabled else None
    tuning = spec.finetune is not None and "task" in values["finetune"]  # finetune.py (train.py's debug=smoke has a finetune node too)
    if not tuning and type(spec.data).__name__ in (TASK_DATA["classification"], TASK_DATA["dpo"]):
        task = next(t for t, name in TASK_DATA.items() if name == type(spec.data).__name__)
        raise bad_value("data", type(spec.data).__name__, f"text for train.py; this data is for finetune.py task={task}")
    if tuning:
        _check_task(spec)
    return spec


TASK_DATA = {"instruct": "InstructDataModule", "classification": "ClassificationDataModule",
             "dpo": "PreferenceDataModule"}  # finetune.task -> the data module it reads


def _check_task(spec: TrainSpec) -> None:
    """The data, the samples and the responses fit ``finetune.task`` (task=... sets them all)."""
    task = spec.finetune.task
    if type(spec.data).__name__ != TASK_DATA[task]:
        raise bad_value("finetune.task", task, f"data of its kind ({TASK_DATA[task]}, not {type(spec.data).__name__}); "
                        f"pick the task with task={task}, which selects its data group")
    if task == "classification" and spec.callbacks.samples.enabled:
        raise bad_value("callbacks.samples.enabled", True, "false for task=classification (a classifier does not "
                        "generate text)")
    if task == "classification" and spec.callbacks.eval.tasks:
        raise bad_value("callbacks.eval.tasks", spec.callbacks.eval.tasks, "[] for task=classification (the "
                        "benchmarks score a language model; evaluate.py task=classification scores a classifier)")
    if task != "instruct" and spec.finetune.responses.enabled:
        raise bad_value("finetune.responses.enabled", True, f"false for task={task} (test-split answers are "
                        "written for instruction tuning)")
