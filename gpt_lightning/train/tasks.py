"""What differs between fine-tuning tasks (``finetune.task``): the model, the LightningModule,
the checkpoint metric, the export and the numbers after training. ``train.job`` runs them all
the same way (data module, Trainer, checkpoints, trackers, result.json).

    instruct        language-model loss on the responses (GPTLitModule); export with chat_template
    classification  a head on the last token (ClassifierLitModule); best checkpoint by val/accuracy;
                    loss, accuracy and macro-F1 of every split and the test confusion matrix after
                    training; a GPT2ForSequenceClassification export
    dpo             Direct Preference Optimization against the starting weights (DPOLitModule)

``finetune.trainable_blocks`` and LoRA apply to every task (:meth:`Task.adapt`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch

from gpt_lightning.train.freeze import freeze_blocks
from gpt_lightning.model import GPT

log = logging.getLogger("gpt_lightning")

CONFUSION_FILE = "confusion_matrix.json"
CONFUSION_PLOT = "confusion_matrix.png"


class Task:
    """Instruction tuning and pretraining: the language-model loss."""

    name = "instruct"
    monitor = ("val/loss", "min")  # the best checkpoint's metric and direction

    def adapt(self, spec, model: GPT) -> GPT:
        """LoRA adapters and ``finetune.trainable_blocks``, as the spec asks."""
        ft = spec.finetune
        if ft is None:
            return model
        if ft.lora.rank:
            from gpt_lightning.lora import apply_lora

            lora = ft.lora
            apply_lora(model, lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets))
        return freeze_blocks(model, ft.trainable_blocks)

    def module(self, spec, model: GPT) -> L.LightningModule:
        from gpt_lightning.train.module import GPTLitModule

        return GPTLitModule(model, spec.optim, seed=spec.seed, perf=spec.perf)

    def export(self, trainer: L.Trainer, module, folder: Path, extra: dict, result: dict) -> Path | None:
        """The export folder (every rank calls it); ``extra`` are the callbacks' summaries for the card."""
        from gpt_lightning.train.final_export import export_model

        return export_model(trainer, module, folder, extra_results=extra, chat_template=chat_template_of(trainer))

    def after_fit(self, trainer: L.Trainer, module, out: Path) -> dict:
        return {}

    def use_command(self, result: dict) -> str | None:
        """The report's command to use the export; None: generate.py's."""
        return None


def chat_template_of(trainer: L.Trainer) -> str | None:
    """The Jinja chat template of the data module's prompt template, if it has one."""
    template = getattr(trainer.datamodule, "template", None)
    if template is None:
        return None
    from gpt_lightning.data.chat_template import chat_template

    return chat_template(template)


class DPOTask(Task):
    name = "dpo"

    def module(self, spec, model: GPT) -> L.LightningModule:
        from gpt_lightning.train.dpo import DPOLitModule

        return DPOLitModule(model, spec.optim, seed=spec.seed, perf=spec.perf, beta=spec.finetune.dpo.beta)

    def after_fit(self, trainer: L.Trainer, module, out: Path) -> dict:
        """The last validation's DPO numbers, for result.json and the report."""
        names = [f"val/{name}" for name in module.METRICS]
        final = {name.split("/", 1)[1]: float(trainer.callback_metrics[name]) for name in names
                 if name in trainer.callback_metrics}
        if trainer.is_global_zero and final:
            print("dpo (last validation): " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()), flush=True)
        return {"dpo": final} if final else {}


class ClassificationTask(Task):
    name = "classification"
    monitor = ("val/accuracy", "max")

    def adapt(self, spec, model: GPT) -> GPT:
        from gpt_lightning.classifier import GPTClassifier

        data = spec.data
        if data.max_length is None:
            data.max_length = model.config.context_length  # cut (and count) what the model cannot read
        data.prepare_data()
        data.setup("fit")  # the labels decide the head
        model = GPTClassifier.from_gpt(model, data.num_labels, data.labels, seed=spec.seed)
        model = super().adapt(spec, model)
        if spec.finetune.lora.rank:
            model.score.weight.requires_grad_(True)  # the new head always trains
        return model

    def module(self, spec, model: GPT) -> L.LightningModule:
        from gpt_lightning.train.classifier_module import ClassifierLitModule

        return ClassifierLitModule(model, spec.optim, seed=spec.seed, perf=spec.perf)

    def export(self, trainer: L.Trainer, module, folder: Path, extra: dict, result: dict) -> Path | None:
        from gpt_lightning.classifier import GPTClassifier
        from gpt_lightning.lora import merge_lora_state
        from gpt_lightning.weights.classifier_export import write_classifier_export

        state = trainer.strategy.lightning_module_state_dict()  # every rank (a collective under FSDP)
        if not trainer.is_global_zero:
            return None
        weights = merge_lora_state({k.removeprefix("model."): v.detach().cpu() for k, v in state.items()
                                    if k.startswith("model.")})
        source = module.model
        model = GPTClassifier(type(source.config).from_dict(source.config.to_dict()), source.num_labels, source.labels)
        model.load_state_dict(weights)
        return write_classifier_export(model, folder, result)

    def use_command(self, result: dict) -> str | None:
        from gpt_lightning.runs.report import short_path

        if not result.get("export"):  # export=false: nothing to point evaluate.py at
            return None
        return (f"python evaluate.py task=classification init=checkpoint init.path={short_path(result['export'])} "
                "classification.path=<a labelled .csv/.tsv/.jsonl>")

    def after_fit(self, trainer: L.Trainer, module, out: Path) -> dict:
        """Loss, accuracy and macro-F1 of every split with the final weights (rank 0), the test
        split's confusion matrix as data and as an image, all logged to the trackers."""
        if not trainer.is_global_zero:
            return {}
        from gpt_lightning.train.trackers import log_image

        data, model = trainer.datamodule, module.model
        splits, matrices = {}, {}
        for split in ("train", "val", "test"):
            metrics, matrix = evaluate_split(model, data.split_loader(split))
            splits[split], matrices[split] = metrics, matrix
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"final/{s}/{k}": v for s, m in splits.items() for k, v in m.items()}, step=step)
        confusion = {"labels": data.labels, "rows": "true label", "columns": "predicted label",
                     **{split: matrices[split].tolist() for split in matrices}}
        (out / CONFUSION_FILE).write_text(json.dumps(confusion, indent=2) + "\n")
        plot_confusion(matrices["test"], data.labels, out / CONFUSION_PLOT)
        log_image(trainer, "test/confusion_matrix", out / CONFUSION_PLOT, step)
        lines = [f"  {s:<5} loss {m['loss']:.4f}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}"
                 for s, m in splits.items()]
        print("classification (final weights):\n" + "\n".join(lines), flush=True)
        return {"classification": splits, "labels": data.labels, "truncated": data.num_truncated,
                "confusion_matrix": str(out / CONFUSION_FILE)}


@torch.no_grad()
def evaluate_split(model, loader) -> tuple[dict, torch.Tensor]:
    """(loss, accuracy, macro_f1, count) over ``loader`` and its confusion matrix, in eval mode."""
    from gpt_lightning.evaluate.classification_metrics import confusion_matrix, scores

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    k = model.num_labels
    matrix = torch.zeros((k, k), dtype=torch.long)
    loss_sum, count = 0.0, 0
    for batch in loader:
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        count += len(batch["labels"])
        matrix += confusion_matrix(logits, batch["labels"], k).cpu()
    model.train(was_training)
    return {"loss": loss_sum / max(count, 1), **scores(matrix), "count": count}, matrix


def plot_confusion(matrix: torch.Tensor, labels: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = int(matrix.max()) if matrix.numel() else 0
    for i in range(k):
        for j in range(k):
            value = int(matrix[i, j])
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_title("test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


TASKS = {"instruct": Task, "classification": ClassificationTask, "dpo": DPOTask}


def task_for(spec) -> Task:
    """The task of a run (train.py: the language-model task)."""
    name = spec.finetune.task if spec.finetune is not None else "instruct"
    return TASKS[name]()
