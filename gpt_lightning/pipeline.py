"""From a composed Hydra config to a finished run: the part train.py and finetune.py share.

config -> (model via the init group, data module, LightningModule, callbacks, logger,
strategy) -> Trainer.fit -> artifacts in the run folder:

    config.yaml          the resolved config
    tb/                  TensorBoard events (logger=tensorboard)
    checkpoints/         best-*.ckpt (lowest val/loss) and last.ckpt
    export/              config.json + model.safetensors (GPT-2 layout, final weights)
    loss.png, samples.txt, result.json
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from .callbacks import LastCheckpoint, LossHistory, SampleText, TrainSetLoss
from .checkpoint_io import AtomicCheckpointIO
from .distributed import HydraDDPStrategy, HydraFSDPStrategy, job_scope
from .errors import bad_value
from .init import build_model as init_model
from .init import explicit_model_keys
from .lit_module import GPTLitModule, perplexity
from .lora import merge_lora_state
from .model import GPT, GPTConfig
from .sweep import RESULT_FILE

log = logging.getLogger("gpt_lightning")


def run_dir() -> Path:
    """The Hydra job's output folder (or the working folder outside Hydra)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def build_model(cfg: DictConfig) -> GPT:
    """The model the init group gives, seeded by ``seed`` (same seed, same initial weights)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return init_model(cfg.init, model_cfg, explicit=explicit_model_keys())


def build_strategy(cfg: DictConfig):
    s = OmegaConf.to_container(cfg.strategy, resolve=True)
    name = s.pop("name")
    t = cfg.trainer
    if name == "auto":
        return HydraDDPStrategy(**s) if _multi_process(t.devices, t.num_nodes, t.accelerator) else "auto"
    if name == "single":
        if _multi_process(t.devices, t.num_nodes, t.accelerator):
            raise bad_value("strategy", "single", f"trainer.devices={t.devices} needs strategy=ddp or strategy=fsdp")
        return "auto"
    if name == "ddp":
        return HydraDDPStrategy(**s)
    if name == "fsdp":
        from .model import Block

        if t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available()):
            raise bad_value("strategy", "fsdp", "needs GPUs (trainer.accelerator=gpu); on CPUs use strategy=ddp")
        checkpointing = s.pop("activation_checkpointing", False)
        return HydraFSDPStrategy(auto_wrap_policy={Block},
                                 activation_checkpointing_policy={Block} if checkpointing else None, **s)
    raise bad_value("strategy", name, "one of auto, single, ddp, fsdp")


def _multi_process(devices, num_nodes: int, accelerator: str) -> bool:
    if num_nodes and int(num_nodes) > 1:
        return True
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices) > 1
    if devices in ("auto", -1, "-1"):
        return accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
    try:
        return int(devices) > 1
    except (TypeError, ValueError):
        raise bad_value("trainer.devices", devices, "a number of devices, a list of device ids, or auto") from None


def resolve_precision(precision):
    """``trainer.precision: null`` picks bf16-mixed on GPUs that support it, else 32-true."""
    if precision is not None:
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_callbacks(cfg: DictConfig, out: Path) -> list[L.Callback]:
    c = cfg.callbacks
    ckpt_dir = out / "checkpoints"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step}", monitor="val/loss", mode="min",
                        save_top_k=1, auto_insert_metric_name=False),
        LastCheckpoint(ckpt_dir, every_n_train_steps=c.checkpoint.every_n_train_steps),
        LossHistory(out_dir=str(out)),
    ]
    if c.samples.enabled:
        callbacks.append(SampleText(prompt=c.samples.prompt, max_new_tokens=c.samples.max_new_tokens,
                                    temperature=c.samples.temperature, top_k=c.samples.top_k, out_dir=str(out),
                                    instruct=c.samples.get("instruct", False)))
    train_eval = c.get("train_eval", {}).get("batches", 0)
    if train_eval != 0:  # null = every training batch
        callbacks.append(TrainSetLoss(train_eval))
    if c.early_stopping.patience:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=c.early_stopping.patience))
    return callbacks


def build_logger(cfg: DictConfig, out: Path):
    if cfg.logger is None or not cfg.logger.get("_target_"):
        return False
    return instantiate(cfg.logger, save_dir=str(out))


def build_trainer(cfg: DictConfig, out: Path) -> L.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["precision"] = resolve_precision(kwargs.get("precision"))
    return L.Trainer(
        **kwargs,
        strategy=build_strategy(cfg),
        callbacks=build_callbacks(cfg, out),
        logger=build_logger(cfg, out),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out),
        use_distributed_sampler=False,  # our samplers shard across ranks and resume mid-epoch
    )


def check_lengths(model: GPT, max_length: int | None) -> None:
    if max_length is not None and max_length > model.config.context_length:
        raise bad_value("data.max_length", max_length,
                        f"at most model.context_length={model.config.context_length} (the model's position table)")


def export_model(trainer: L.Trainer, module: GPTLitModule, folder: Path) -> Path | None:
    """Gather the full weights (works under DDP and FSDP) and write them in GPT-2 layout."""
    state = trainer.strategy.lightning_module_state_dict()  # collective under FSDP: every rank calls it
    if not trainer.is_global_zero:
        return None
    weights = {k.removeprefix("model."): v.detach().cpu() for k, v in state.items() if k.startswith("model.")}
    weights = merge_lora_state(weights)  # LoRA updates folded into plain weights
    model = GPT(GPTConfig.from_dict(module.model.config.to_dict()))
    model.load_state_dict(weights)
    return model.save_pretrained(folder)


# Our samplers do resume mid-epoch (data/sampler.py); Lightning cannot see that and warns.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def fit(cfg: DictConfig, datamodule: L.LightningDataModule, model: GPT,
        after_fit: Callable[[L.Trainer, GPTLitModule, Path], dict] | None = None) -> dict:
    """Train ``model`` on ``datamodule`` as ``cfg`` says; return the run's result dict."""
    out = run_dir()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = GPTLitModule(model, OmegaConf.to_container(cfg.optim, resolve=True), seed=cfg.seed,
                          compile=cfg.compile, activation_checkpointing=cfg.activation_checkpointing,
                          mfu_peak_tflops=cfg.mfu_peak_tflops)
    trainer = build_trainer(cfg, out)
    if trainer.is_global_zero:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    start = time.time()
    with job_scope() as scope:
        scope.append(trainer.strategy)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        result = _result(cfg, trainer, module, time.time() - start)
        extra = after_fit(trainer, module, out) if after_fit else {}
        if cfg.export:
            folder = export_model(trainer, module, out / "export")
            if folder:
                result["export"] = str(folder)
        if trainer.is_global_zero:
            result.update(extra or {})
            _log_hparams(trainer, cfg, result)
            (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            log.info("result: %s", json.dumps(result))
    return result


def _result(cfg: DictConfig, trainer: L.Trainer, module: GPTLitModule, seconds: float) -> dict:
    best = next((cb for cb in trainer.checkpoint_callbacks if cb.monitor == "val/loss"), None)
    best_loss = float(best.best_model_score) if best is not None and best.best_model_score is not None else None
    final = trainer.callback_metrics.get("val/loss")
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {
        "overrides": overrides,
        "params": module.model.num_params(),
        "best_val_loss": best_loss,
        "best_val_perplexity": perplexity(best_loss) if best_loss is not None else None,
        "final_val_loss": float(final) if final is not None else None,
        "best_checkpoint": best.best_model_path if best is not None else None,
        "tokens_seen": module.tokens_seen,
        "global_step": trainer.global_step,
        "time_s": round(seconds, 1),
    }


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, result: dict) -> None:
    """Hyperparameters with the run's final numbers, for TensorBoard's HParams tab."""
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key != "_target_":
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(OmegaConf.to_container(cfg, resolve=True))
    metrics = {f"hp/{k}": result[k] for k in ("best_val_loss", "final_val_loss") if result.get(k) is not None}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and metrics:
            logger.log_hyperparams(flat, metrics=metrics)
            logger.finalize("success")
