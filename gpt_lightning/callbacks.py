"""Callbacks for what a user watches during a run: samples, loss against tokens, the plot."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from .preemption import PREEMPTION
from .loggers import log_image, log_rows, log_text
from .run_files import HISTORY_FILE


def _tensorboard(trainer: L.Trainer):
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class SampleText(L.Callback):
    """After each validation, continue a fixed prompt and log the text.

    Written to the trackers (TensorBoard's TEXT tab, a W&B table, MLflow text files; tag
    ``samples``), appended to ``samples.txt`` in the run folder and printed, so a user sees
    the samples turn from noise into words. With ``instruct`` the prompt is wrapped in the
    data module's template (``data.template.*``), the one the model is trained on. Every rank
    generates (a sharded model's forward needs them all, see :meth:`GPTLitModule.on_every_rank`);
    rank 0 alone prints and writes.
    """

    def __init__(self, prompt: str = "Every effort moves you", max_new_tokens: int = 40,
                 temperature: float = 0.0, top_k: int | None = None, out_dir: str | None = None,
                 instruct: bool = False) -> None:
        self.prompt, self.max_new_tokens, self.instruct = prompt, max_new_tokens, instruct
        self.temperature, self.top_k = temperature, top_k
        self.out_dir = Path(out_dir) if out_dir else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        template = getattr(trainer.datamodule, "template", None) if self.instruct else None
        text = pl_module.on_every_rank(self.sample, template)
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        line = f"[step {step}, {pl_module.tokens_seen:,} tokens] {self.prompt}{text}".replace("\n", " ")
        print("\n" + line, flush=True)
        log_text(trainer, "samples", self.prompt, text, step)  # TensorBoard, W&B, MLflow
        if self.out_dir is not None:
            with open(self.out_dir / "samples.txt", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def sample(self, model, template=None) -> str:
        """The continuation of the prompt (in ``template``, default Alpaca, when instruct)."""
        from .generation import generate
        from .tokenizer import get_tokenizer

        tok = get_tokenizer()
        text = self.prompt
        if self.instruct:
            from .template import format_prompt

            text = format_prompt(self.prompt, template=template)
        ids = tok.encode(text)[-(model.config.context_length - self.max_new_tokens):]
        was_training = model.training
        model.eval()
        try:
            out = generate(model, [ids], max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           top_k=self.top_k or 0, seed=0, eos_id=tok.eot_id if self.instruct else None)
        finally:
            model.clear_kv_cache()
            model.train(was_training)
        return tok.decode(out[0])


class LossHistory(L.Callback):
    """Train and validation loss against tokens seen (and epochs), for plots.

    Logs ``loss_vs_tokens/train`` and ``loss_vs_tokens/val`` to TensorBoard with tokens
    seen as the x-axis, and at the end of fit writes ``history.json`` and draws ``loss.png`` in
    the run folder (loss against tokens seen, epochs on the top axis; also sent to the
    trackers). Its history is saved in checkpoints so a resumed run draws the whole curve. A
    train point is one optimizer step: its token-weighted loss over every micro-batch and rank
    (``GPTLitModule.step_loss``); a validation point is read when validation ends, after the
    module has computed it.
    """

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = Path(out_dir) if out_dir else None
        self.train: list[tuple[int, float, float]] = []  # (tokens, loss, epoch progress)
        self.val: list[tuple[int, float, float]] = []
        self._pending: list[tuple[int, object, float]] = []  # losses still on the device

    def _flush(self) -> None:
        """Move pending losses to the host in one transfer (not one sync per step)."""
        if self._pending:
            import torch

            values = torch.stack([loss for _, loss, _ in self._pending]).float().tolist()
            self.train += [(t, v, e) for (t, _, e), v in zip(self._pending, values)]
            self._pending = []

    def _epoch_progress(self, trainer: L.Trainer, batch_idx: int) -> float:
        n = trainer.num_training_batches
        return trainer.current_epoch + ((batch_idx + 1) / n if n and n != float("inf") else 0.0)

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not pl_module.step_done:  # a micro-batch inside an accumulation window
            return
        self._pending.append((pl_module.tokens_seen, pl_module.step_loss, self._epoch_progress(trainer, batch_idx)))
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._flush()
            tb = _tensorboard(trainer)
            if tb is not None:
                tokens, value, _ = self.train[-1]
                tb.add_scalar("loss_vs_tokens/train", value, tokens)

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        # Not on_validation_epoch_end: Lightning runs the callbacks' one before the module's,
        # which computes the loss, so it would still hold the previous validation's.
        if trainer.sanity_checking or pl_module.val_loss is None:
            return
        value = pl_module.val_loss
        epoch = self._epoch_progress(trainer, trainer.fit_loop.epoch_loop.batch_idx)
        self.val.append((pl_module.tokens_seen, value, epoch))
        tb = _tensorboard(trainer)
        if tb is not None:
            tb.add_scalar("loss_vs_tokens/val", value, pl_module.tokens_seen)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        self._flush()
        if self.out_dir is not None and self.train:
            write_history(self.train, self.val, self.out_dir / HISTORY_FILE)
            plot = plot_losses(self.train, self.val, self.out_dir / "loss.png")
            log_image(trainer, "loss", plot, trainer.global_step)  # TensorBoard, W&B, MLflow

    def state_dict(self) -> dict:
        self._flush()
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state: dict) -> None:
        self.train, self.val = list(state["train"]), list(state["val"])


def write_history(train, val, path: Path) -> Path:
    """``history.json``: {"train": [[tokens, loss, epoch], ...], "val": [...]} (read by compare)."""
    import json

    from .atomic import atomic_write

    text = json.dumps({"train": [list(p) for p in train], "val": [list(p) for p in val]}) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def plot_losses(train, val, path: Path) -> Path:
    """Loss against tokens seen with epochs on a second x-axis, as in "LLMs from scratch"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([t for t, _, _ in train], [v for _, v, _ in train], label="train loss", alpha=0.8)
    if val:
        ax.plot([t for t, _, _ in val], [v for _, v, _ in val], "o-", label="validation loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    top = ax.twiny()  # epochs, aligned with the tokens of each training point
    top.plot([e for _, _, e in train], [v for _, v, _ in train], alpha=0)
    top.set_xlabel("epochs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: every N steps (or at each validation), once more when training ends, so
    the file always holds the final state of a finished run, and when a pre-emption signal
    arrives (see ``preemption``): at the end of that optimizer step, then the process exits."""

    def __init__(self, dirpath, every_n_train_steps: int | None = None) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_train_steps)
        self._step_seen: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_started()

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_started()
        self._step_seen = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if stepped and PREEMPTION.requested(trainer):  # every rank asks at each step, so all agree
            self._save(trainer)
            PREEMPTION.stop(self.path, trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        # Lightning (2.6) writes save_last at validation end only when a top-k checkpoint was
        # written in that step, and this callback keeps no top-k: with no step interval,
        # last.ckpt is written here, after each validation.
        super().on_validation_end(trainer, pl_module)
        if self._every_n_train_steps == 0 and not trainer.sanity_checking:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        PREEMPTION.training_ended()
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved:
            trainer.save_checkpoint(self.path)
            self._last_global_step_saved = trainer.global_step


def log_text_table(trainer: L.Trainer, tag: str, jsonl: Path, limit: int = 10) -> None:
    """The first ``limit`` rows of a JSON Lines file as a table in the trackers (TensorBoard's
    TEXT tab as markdown, a W&B table, an MLflow JSON artifact)."""
    import json

    if not jsonl.is_file():
        return
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()[:limit]]
    log_rows(trainer, tag, rows, trainer.global_step)


class TrainSetLoss(L.Callback):
    """After each validation, the loss on training windows in eval mode: ``train/eval_loss``.

    ``train/loss`` is each step's own batch in train mode (dropout on), before that step's
    update. "LLMs from scratch" reports its train loss the other way: the current model in
    eval mode (no dropout) on a few training batches. This callback measures that: the
    token-weighted loss over the first ``batches`` training batches in their stored order
    (None: every batch), with the same weights the validation just scored. Every rank scores
    the same batches, so sharded (FSDP) models take part everywhere and ranks agree.
    """

    def __init__(self, batches: int | None = None) -> None:
        from .errors import bad_value

        if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
            raise bad_value("callbacks.train_eval.batches", batches,
                            "a number of training batches >= 1, null for all, or 0 for off")
        self.batches = batches

    def setup(self, trainer, pl_module, stage: str) -> None:
        if getattr(trainer.datamodule, "train_set", None) is None:
            from .errors import bad_value

            raise bad_value("callbacks.train_eval.batches", self.batches,
                            "only pretraining data (train.py) has training windows to score; use 0 here")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        import torch
        from torch.utils.data import DataLoader

        dm = trainer.datamodule
        loader = DataLoader(dm.train_set, batch_size=dm.batch_size, shuffle=False)  # fixed order
        total = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        count = torch.zeros((), dtype=torch.float64, device=pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                for i, batch in enumerate(loader):
                    if self.batches is not None and i >= self.batches:
                        break
                    loss, n = pl_module.loss({k: v.to(pl_module.device) for k, v in batch.items()})
                    total += loss.double() * n
                    count += n
        finally:
            pl_module.train(was_training)
        pl_module.log("train/eval_loss", (total / count.clamp(min=1)).float(), sync_dist=False)
