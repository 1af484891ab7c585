"""``evaluate.py task=classification``: score a labelled file with a classifier export.

The export is any GPT-2 sequence-classification folder (``finetune.py task=classification``
writes one; ``init=checkpoint init.path=<folder>``); the file is read like the training
data (CSV, TSV or JSON Lines; ``classification.text_column`` / ``label_column`` /
``columns``), its labels must be among the export's ``id2label``. Reported: accuracy,
macro-F1 and the mean cross-entropy; ``classification.jsonl`` holds each text's true and
predicted label, ``confusion_matrix.json`` the counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.evaluate.tasks import Metric, Task


class ClassificationTask(Task):
    name = "classification"

    def __init__(self, items: list, labels: list[str], max_length: int) -> None:
        super().__init__(items)
        self.labels, self.max_length = labels, max_length

    def run(self, model, items, *, batch_size, progress):
        from gpt_lightning.data.classification import ClassificationCollator, Example

        collate = ClassificationCollator(max_length=self.max_length)
        device = next(model.parameters()).device
        rows = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = collate([Example(ids, label) for _, ids, label in chunk])
            with torch.no_grad():
                logits = model(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).float()
            losses = torch.nn.functional.cross_entropy(logits, batch["labels"].to(device), reduction="none")
            for (text, _, label), pred, loss in zip(chunk, logits.argmax(-1).tolist(), losses.tolist()):
                rows.append({"text": text, "label": self.labels[label], "predicted": self.labels[pred], "loss": loss})
            progress(len(chunk))
        return rows

    def totals(self, rows):
        out = {"n": float(len(rows)), "loss": sum(r["loss"] for r in rows)}
        for r in rows:
            key = f"{r['label']}->{r['predicted']}"
            out[key] = out.get(key, 0.0) + 1
        return out

    def matrix(self, totals) -> torch.Tensor:
        k = len(self.labels)
        return torch.tensor([[int(totals.get(f"{a}->{b}", 0)) for b in self.labels] for a in self.labels]).view(k, k)

    def metrics(self, totals) -> list[Metric]:
        from gpt_lightning.evaluate.classification_metrics import scores

        n = int(totals["n"])
        s = scores(self.matrix(totals))
        return [("accuracy", s["accuracy"], n), ("macro_f1", s["macro_f1"], n),
                ("loss", totals["loss"] / n if n else None, n)]


def run(cfg, names: list[str], device, dtype, output_dir) -> list[dict]:
    """evaluate.py with task=classification (see the module docstring); ``cfg``: EvaluateConfig."""
    from gpt_lightning.data.classification import encode_texts, labelled_texts, read_rows
    from gpt_lightning.evaluate.tasks import evaluate, format_table
    from gpt_lightning.weights.classifier_export import load_classifier

    if names != ["classification"]:
        raise bad_value("tasks", names, "task=classification on its own (it needs a classifier export, the other "
                        "tasks a language model)")
    settings = cfg.classification
    if not settings.path:
        raise bad_value("classification.path", settings.path, "a .csv, .tsv or .jsonl file of labelled texts")
    if cfg.init.name != "checkpoint" or not cfg.init.path:
        raise bad_value("init", cfg.init.name, "init=checkpoint init.path=<a classifier export folder> "
                        "(finetune.py task=classification writes one in <run>/export)")
    path = Path(settings.path).expanduser()
    records = labelled_texts(read_rows(path, settings.columns), path, settings.text_column, settings.label_column)
    model = load_classifier(cfg.init.path)
    index = {name: i for i, name in enumerate(model.labels)}
    unknown = sorted({label for _, label in records} - set(index))
    if unknown:
        raise ConfigError(f"{path}: labels {unknown[:5]} are not among the export's labels {model.labels}")
    limit = cfg.limit
    records = records[:limit] if limit else records
    max_length = settings.max_length or model.config.context_length
    items = [(text, ids, index[label]) for (text, label), ids in zip(records, encode_texts([t for t, _ in records]))]
    task = ClassificationTask(items, model.labels, max_length)
    model = model.to(device=device, dtype=dtype).eval()
    summary = evaluate(model, [task], batch_size=cfg.batch_size, progress=cfg.progress, output_dir=output_dir)
    out = Path(output_dir)
    (out / "confusion_matrix.json").write_text(json.dumps({
        "labels": model.labels, "rows": "true label", "columns": "predicted label",
        "matrix": task.matrix(task.last_totals).tolist()}, indent=2) + "\n")
    print(format_table(summary), flush=True)
    return summary
