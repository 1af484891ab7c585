"""What `python evaluate.py` does: check the config, load the tasks and the weights, score,
write ``summary.json`` + ``<task>.jsonl`` into the run folder and print the summary table.

Every key is described in conf/evaluate.yaml. The entry script passes the run folder in.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from typing import Iterable

from gpt_lightning.config.evaluate import EvaluateConfig
from gpt_lightning.config.schemas import parse
from gpt_lightning.generate.loading import pick_device, pick_dtype
from gpt_lightning.quantize import check_quantize, is_quantized, load_quantized, quantize_model
from gpt_lightning.weights.sources import build_model, planned_config
from gpt_lightning.evaluate.build import make_tasks
from gpt_lightning.evaluate.hellaswag import REFERENCE
from gpt_lightning.evaluate.judge import Judge
from gpt_lightning.evaluate.tasks import SUMMARY_FILE, evaluate, format_table

log = logging.getLogger("gpt_lightning")


def reference_notes(cfg: EvaluateConfig, summary: list[dict]) -> dict:
    """Published scores of the released weights to print beside ours."""
    notes = {}
    if cfg.init.name in REFERENCE:
        who, metric, correct, total = REFERENCE[cfg.init.name]
        notes[("hellaswag", metric)] = f"{who}: {correct / total:.4f} ({correct:,}/{total:,})"
    return notes if any((r["task"], r["metric"]) in notes for r in summary) else {}


def run(values: dict, output_dir: str | Path, explicit: Iterable[str] = ()) -> list[dict]:
    """evaluate.py: ``values`` is the composed conf/evaluate.yaml as plain dicts."""
    cfg = parse(EvaluateConfig, values, "")  # every key checked, before anything is read
    names = cfg.chosen_tasks()
    device = pick_device(str(cfg.device))
    dtype = pick_dtype(str(cfg.dtype), device)
    check_quantize(cfg.quantize, device, dtype)
    if "classification" in names:  # a classifier export, not a language model
        from gpt_lightning.evaluate import classification

        return classification.run(cfg, names, device, dtype, output_dir)
    needs_model = any(n != "judge" for n in names)  # the judge scores text; it needs no weights of ours
    context = planned_config(cfg.init, cfg.model, explicit).context_length if needs_model else None
    tasks = make_tasks(names, cfg, context_length=context, limit=cfg.limit)  # data before weights
    model = None
    if needs_model:
        if cfg.quantize == "int8":  # straight from the file to int8: the fp32 model never exists
            model = build_model(cfg.init, cfg.model, explicit, seed=cfg.seed, load_safetensors=load_quantized)
            model = model if is_quantized(model) else quantize_model(model.eval())
        else:
            model = build_model(cfg.init, cfg.model, explicit, seed=cfg.seed)  # seeds init=scratch's weights
            model = model.to(device=device, dtype=dtype).eval()
    summary = evaluate(model, tasks, batch_size=cfg.batch_size, progress=cfg.progress, output_dir=output_dir)
    print(format_table(summary, reference_notes(cfg, summary)), flush=True)
    for task in tasks:
        if isinstance(task, Judge):
            dist = Judge.distribution(task.last_totals)
            print("judge scores: " + ", ".join(f"{b}: {c}" for b, c in dist.items()), flush=True)
    print(f"wrote {Path(output_dir) / SUMMARY_FILE} and {', '.join(t.name + '.jsonl' for t in tasks)}",
          file=sys.stderr, flush=True)
    return summary

