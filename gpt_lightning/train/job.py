"""From a checked run spec to a finished run: the part train.py and finetune.py share.

spec (config.TrainSpec) -> model (init group) -> data module, LightningModule, callbacks,
logger, strategy -> Trainer.fit -> artifacts in the run folder:

    config.yaml          the resolved config
    tb/                  TensorBoard events (logger=tensorboard)
    checkpoints/         best-*.ckpt (lowest val/loss) and last.ckpt
    export/              Hugging Face folder of the final weights (export.py): weights, tokenizer,
                         generation config, model card
    loss.png, history.json, samples.txt, result.json (+ responses.jsonl when fine-tuning)

Plain Python: everything Hydra knows (run folder, overrides, how to re-launch a rank)
comes in through :class:`RunContext`, so a run can be started from a script too.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf

from gpt_lightning.train import resume
from gpt_lightning.train import run_folder
from gpt_lightning.train import callbacks as run_callbacks
from gpt_lightning.config.batch_tokens import accumulation
from gpt_lightning.train.callbacks import LastCheckpoint, LossHistory, RunRecord, SampleText, TrainSetLoss, ValidateAtEnd
from gpt_lightning.train import quiet
from gpt_lightning.train.callbacks.best_checkpoint import BestCheckpoint
from gpt_lightning.train.callbacks.summary import ParameterSummary
from gpt_lightning.train import cluster
from gpt_lightning.train.checkpoint_io import checkpoint_io
from gpt_lightning.config.schemas import CallbacksConfig, DDPConfig, FSDPConfig, TrainSpec, TrainerConfig
from gpt_lightning.train.distributed import JobDDPStrategy, JobFSDPStrategy, Relaunch, job_scope
from gpt_lightning.errors import bad_value
from gpt_lightning.train.callbacks.evaluation import eval_callbacks
from gpt_lightning.weights.sources import build_model
from gpt_lightning.train.module import GPTLitModule
from gpt_lightning.train.trackers import (TrackerRuns, build_logger as build_trackers, describe as describe_trackers)
from gpt_lightning.train.trackers import finish as finish_trackers, log_hparams
from gpt_lightning.train.freeze import TrainableParams
from gpt_lightning.train.tasks import Task, task_for
from gpt_lightning.model import GPT, perplexity
from gpt_lightning.runs.report import format_report
from gpt_lightning.train.callbacks.responses import WriteResponses
from gpt_lightning.runs.files import RESULT_FILE
from gpt_lightning.tokenizer import EOT_ID

log = logging.getLogger("gpt_lightning")
TOKENIZER_VOCAB = EOT_ID + 1  # GPT-2 BPE: 50,257 ids


@dataclass
class RunContext:
    """What the caller (an entry point, a script, a test) knows about the run beyond its spec."""

    out_dir: Path  # the run folder
    overrides: list[str] = field(default_factory=list)  # command-line overrides, for result.json
    explicit_model_keys: set[str] = field(default_factory=set)  # model keys the user set himself
    relaunch: Relaunch | None = None  # how extra DDP ranks re-run this job (None: Lightning's way)
    config: dict | None = None  # the composed config, for config.yaml, the trackers' hparams, the card
    command: str | None = None  # the command line that started this job, for the report and the card


def train(spec: TrainSpec, ctx: RunContext) -> dict:
    """Build the model the init group gives (with LoRA when asked) and fit it.

    The run folder is locked and checked first (see ``run_folder.guard``), so a second run
    into a folder that a live run holds stops before any weights are built.
    """
    with run_folder.guard(ctx.out_dir, owner=_owner(spec), export=spec.run.export,
                          ckpt_path=spec.run.ckpt_path):
        model = build_model(spec.init, spec.model, ctx.explicit_model_keys, seed=spec.seed,
                            tokenizer_vocab=TOKENIZER_VOCAB)
        task = task_for(spec)
        model = task.adapt(spec, model)  # classification head, LoRA, finetune.trainable_blocks
        return _fit(spec, model, ctx, task)


def fit(spec: TrainSpec, model: GPT, ctx: RunContext) -> dict:
    """Train ``model`` on ``spec.data`` as ``spec`` says; return the run's result dict."""
    with run_folder.guard(ctx.out_dir, owner=_owner(spec), export=spec.run.export,
                          ckpt_path=spec.run.ckpt_path):
        return _fit(spec, model, ctx)


def _owner(spec: TrainSpec) -> bool:
    """Global rank 0 (as the launcher says: the Trainer does not exist yet) owns the run folder."""
    return cluster.launch_rank(spec.trainer.devices) == 0


def _fit(spec: TrainSpec, model: GPT, ctx: RunContext, task: Task | None = None) -> dict:
    task = task or task_for(spec)
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit_lengths(spec.data, model)
    L.seed_everything(spec.seed, workers=True, verbose=False)
    module = task.module(spec, model)
    trainer = build_trainer(spec, out, ctx.relaunch, extra_callbacks=[
        TrainableParams(),  # prints and logs how many parameters train
        TrackerRuns(),  # W&B / MLflow run ids in checkpoints: a resume continues those runs
        RunRecord(_config_dict(spec, ctx), ctx.command),  # for the model card
    ])
    if spec.trainer.tokens_per_step is not None:  # the global batch in tokens: derive the accumulation
        trainer.accumulate_grad_batches = accumulation(spec.trainer.tokens_per_step, spec.data.batch_size,
                                                       spec.data.max_length, trainer.world_size)
    start = time.time()
    with job_scope(trainer.strategy):
        ckpt_path = resume.resolve(spec.run.ckpt_path, out, module, spec.data, trainer.world_size)
        if trainer.is_global_zero:
            (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(_config_dict(spec, ctx))))
        try:
            trainer.fit(module, datamodule=spec.data, ckpt_path=ckpt_path)
        except (RuntimeError, OSError) as err:  # another rank died or went silent: one line, not a hang
            line = cluster.peer_failure(err, getattr(spec.strategy, "timeout_s", None))
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        result = _result(trainer, module, time.time() - start, ctx.overrides, task.monitor)
        result.update(task.after_fit(trainer, module, out))  # classification: metrics of every split
        extra = run_callbacks.results(trainer)  # eval/<task>/<metric>, best_eval/..., the responses' summary
        result.update(extra)
        if spec.run.export:
            folder = task.export(trainer, module, out / "export", extra, result)
            if folder:
                result["export"] = str(folder)
        if trainer.is_global_zero:
            metrics = {f"hp/{k}": result[k] for k in ("best_val_loss", "final_val_loss") if result.get(k) is not None}
            log_hparams(trainer, _config_dict(spec, ctx), metrics)
            (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
            log.info("result: %s", json.dumps(result))
            samples = spec.callbacks.samples
            print(format_report(result, out, describe_trackers(trainer), ctx.command,
                                instruct_prompt=samples.prompt if samples.instruct else None,
                                use_command=task.use_command(result)), flush=True)
            finish_trackers(trainer)
    return result


def fit_lengths(datamodule, model: GPT) -> None:
    """``data.max_length: null`` means the model's context; longer is an error."""
    context = model.config.context_length
    if getattr(datamodule, "max_length", None) is None:
        datamodule.max_length = context
    if datamodule.max_length > context:
        raise bad_value("data.max_length", datamodule.max_length,
                        f"at most model.context_length={context} (the model's position table)")


# ---- the Trainer and what goes into it ----------------------------------------------------------
def build_strategy(spec: TrainSpec, relaunch: Relaunch | None):
    s, t = spec.strategy, spec.trainer
    options = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("name", "timeout_s")}
    if hasattr(s, "timeout_s"):
        options["timeout"] = datetime.timedelta(seconds=s.timeout_s)
    if isinstance(s, DDPConfig):
        return JobDDPStrategy(relaunch=relaunch, **options)
    if isinstance(s, FSDPConfig):
        from gpt_lightning.model import Block

        checkpointing = {Block} if spec.perf.activation_checkpointing else None
        return JobFSDPStrategy(relaunch=relaunch, auto_wrap_policy={Block}, activation_checkpointing_policy=checkpointing,
                               **options)
    if s.name == "auto" and t.multi_process():
        return JobDDPStrategy(relaunch=relaunch)
    return "auto"


def build_callbacks(c: CallbacksConfig, out: Path, spec: TrainSpec) -> list[L.Callback]:
    ckpt_dir = out / "checkpoints"
    monitor = task_for(spec).monitor  # val/loss; a classifier's val/accuracy
    callbacks: list[L.Callback] = [
        BestCheckpoint(dirpath=ckpt_dir, filename="best-step{step}", monitor=monitor[0], mode=monitor[1],
                       save_top_k=1, auto_insert_metric_name=False,
                       save_on_train_epoch_end=False),  # at validation end, beside last.ckpt (a link then)
        LastCheckpoint(ckpt_dir, every_n_train_steps=c.checkpoint.every_n_train_steps,
                       every_n_minutes=c.checkpoint.every_n_minutes),
        LossHistory(out_dir=str(out)),
        cluster.SameRunFolder(out),  # every rank writes into rank 0's run folder
        ValidateAtEnd(),  # a run stopped by trainer.max_steps validates its last step
        ParameterSummary(),  # one line in place of Lightning's table
    ]
    s = c.samples
    if s.enabled:
        callbacks.append(SampleText(prompt=s.prompt, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                    top_k=s.top_k, out_dir=str(out), instruct=s.instruct))
    callbacks.append(CheckAgainstData(spec.trainer))
    if c.train_eval.batches != 0:  # null = every training batch
        callbacks.append(TrainSetLoss(c.train_eval.batches))
    if c.early_stopping.patience:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=c.early_stopping.patience))
    responses = spec.finetune.responses if spec.finetune else None
    if responses is not None and responses.enabled:
        callbacks.append(WriteResponses(out / responses.file, max_new_tokens=responses.max_new_tokens,
                                        batch_size=responses.batch_size, judge=spec.judge))
    return callbacks + eval_callbacks(c.eval)  # callbacks.eval: benchmark scores


class CheckAgainstData(L.Callback):
    """The checks that need the data set up: a validation interval longer than an epoch."""

    def __init__(self, trainer: TrainerConfig) -> None:
        self.trainer = trainer

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        interval, t = self.trainer.val_check_interval, self.trainer
        if stage != "fit" or not isinstance(interval, int) or t.check_val_every_n_epoch is None:
            return
        batches = len(trainer.datamodule.train_dataloader())
        if isinstance(t.limit_train_batches, int):
            batches = min(batches, t.limit_train_batches)
        elif isinstance(t.limit_train_batches, float):
            batches = int(batches * t.limit_train_batches)
        if interval > batches:
            raise bad_value("trainer.val_check_interval", interval,
                            f"at most the {batches} training batches of an epoch; use a smaller count, a fraction "
                            "such as 0.5, or null to validate once per epoch")


def build_logger(spec: TrainSpec, out: Path):
    return build_trackers(spec.logger, out, ckpt_path=resume.candidate(spec.run.ckpt_path, out))


def build_trainer(spec: TrainSpec, out: Path, relaunch: Relaunch | None = None,
                  extra_callbacks: list[L.Callback] = ()) -> L.Trainer:
    t: TrainerConfig = spec.trainer
    return L.Trainer(
        **t.kwargs(),
        strategy=build_strategy(spec, relaunch),
        callbacks=build_callbacks(spec.callbacks, out, spec) + list(extra_callbacks),
        logger=build_logger(spec, out),
        plugins=[checkpoint_io(spec.callbacks.checkpoint.async_write)],
        default_root_dir=str(out),
        enable_model_summary=False,  # ParameterSummary says it in one line
        use_distributed_sampler=False,  # our samplers shard across ranks and resume mid-epoch
    )


quiet.install()  # no Lightning line a user cannot act on (see quiet.py)
# Our samplers do resume mid-epoch (data/sampler.py); Lightning cannot see that and warns.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


# ---- what the run reports ------------------------------------------------------------------------
def _config_dict(spec: TrainSpec, ctx: RunContext) -> dict:
    if ctx.config is not None:
        return ctx.config
    parts = {k: getattr(spec, k) for k in ("model", "init", "optim", "trainer", "strategy", "callbacks", "perf", "run")}
    return {k: dataclasses.asdict(v) for k, v in parts.items()}


def _last_val(trainer: L.Trainer) -> float | None:
    """The last validation loss of the run's history (restored from its checkpoint), or None."""
    history = next((cb for cb in trainer.callbacks if isinstance(cb, LossHistory)), None)
    return float(history.val[-1][1]) if history is not None and history.val else None


def _result(trainer: L.Trainer, module: GPTLitModule, seconds: float, overrides: list[str],
            monitor: tuple[str, str] = ("val/loss", "min")) -> dict:
    best = next((cb for cb in trainer.checkpoint_callbacks if cb.monitor == monitor[0]), None)
    best_score = float(best.best_model_score) if best is not None and best.best_model_score is not None else None
    best_loss = best_score if monitor[0] == "val/loss" else None
    extra = {} if monitor[0] == "val/loss" else {"best_" + monitor[0].replace("/", "_"): best_score}
    final = trainer.callback_metrics.get("val/loss")
    final = float(final) if final is not None else _last_val(trainer)  # a resume with nothing left to train
    record = run_callbacks.find(trainer, RunRecord)
    session = record.current if record is not None else {}
    return {
        "overrides": list(overrides),
        "params": module.model.num_params(),
        "best_val_loss": best_loss,
        "best_val_perplexity": perplexity(best_loss) if best_loss is not None else None,
        "final_val_loss": final,
        "final_val_perplexity": perplexity(final) if final is not None else None,
        "best_checkpoint": best.best_model_path if best is not None else None,
        "tokens_seen": module.tokens_seen,
        "global_step": trainer.global_step,
        "time_s": round(seconds, 1),
        "tokens_this_run": session.get("tokens"),  # this session: a resumed run counts from its checkpoint
        "train_time_s": session.get("train_time_s"),  # fit loop only, without setup and export
        "tokens_per_s": session.get("tokens_per_s"),
        **extra,
    }


# ---- from a script ------------------------------------------------------------------------------
PRETRAIN_DATA = "gpt_lightning.data.pretrain.PretrainDataModule"


def run_training(out_dir: str | Path, **config) -> dict:
    """Train from a script with the keys of the command line, no Hydra: ``gpt_lightning.run_training``.

    ``config`` holds the nodes of train.yaml as plain values: ``model="gpt2_tiny"`` (a size name)
    or a dict of model keys, ``data={"max_length": 64}`` (a dict for the pretraining data module,
    or one with its own ``_target_``), ``trainer={"max_steps": 50}``, ``optim=...``, ``init=...``,
    ``callbacks=...``, ``logger={"csv": {"_target_": ...}}``, ``seed=1`` ... Every value goes through
    the same strict check as ``train.py``'s (a bad one raises one ConfigError line); a node left out
    keeps its schema's defaults (no logger, GPT-2 124M's shape, The Verdict). Returns result.json's dict.
    """
    from gpt_lightning.config.schemas import RunConfig, train_spec
    from gpt_lightning.model import GPTConfig

    if isinstance(config.get("model"), str):
        config["model"] = GPTConfig.from_name(config["model"]).to_dict()
    data = dict(config.get("data") or {})
    data.setdefault("_target_", PRETRAIN_DATA)
    if data["_target_"] == PRETRAIN_DATA:
        data.setdefault("seed", config.get("seed", RunConfig.seed))  # as ${seed} in the YAML
    spec = train_spec({**config, "data": data})
    return train(spec, RunContext(out_dir=Path(out_dir), explicit_model_keys=set(config.get("model") or ())))
