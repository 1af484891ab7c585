"""After fine-tuning: greedy responses for held-out instructions, written as JSON Lines."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from gpt_lightning.data.template import PromptTemplate
from gpt_lightning.generate.sampling import generate
from gpt_lightning.model import GPT
from gpt_lightning.tokenizer import get_tokenizer
from gpt_lightning.train.trackers import log_text_table


@torch.inference_mode()
def write_responses(model: GPT, records: Sequence[dict], template: PromptTemplate, path: Path | None, *,
                    max_new_tokens: int = 256, batch_size: int = 8, device: torch.device | str = "cpu") -> dict:
    """Answer every record greedily (batched, stopping at ``<|endoftext|>``) into ``path``.

    Each line: instruction, input, output (the reference), response. Returns a summary:
    count, mean response tokens, exact matches with the reference, and seconds taken.
    ``path`` None generates without writing: the other ranks of a sharded model, which
    must take part in every forward (see ``GPTLitModule.on_every_rank``).
    """
    tok = get_tokenizer()
    original = next(model.parameters()).device
    model.to(device)
    rows, new_tokens, exact = [], 0, 0
    start = time.perf_counter()
    try:
        for i in range(0, len(records), batch_size):
            batch = records[i:i + batch_size]
            prompts = [tok.encode(template.format_prompt(r["instruction"], r.get("input", ""))) for r in batch]
            with warnings.catch_warnings():  # a response cut by the context length is expected here
                warnings.filterwarnings("ignore", message=".*leaves room for.*")
                outs = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0, eos_id=tok.eot_id)
            for record, out in zip(batch, outs):
                ids = [t for t in out if t != tok.eot_id]
                response = tok.decode(ids).strip()
                new_tokens += len(ids)
                exact += response == record["output"].strip()
                rows.append({"instruction": record["instruction"], "input": record.get("input", ""),
                             "output": record["output"], "response": response})
    finally:
        model.to(original)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "responses_file": str(path) if path is not None else None,
        "responses": len(rows),
        "response_mean_tokens": round(new_tokens / max(1, len(rows)), 1),
        "response_exact_match": exact,
        "responses_time_s": round(time.perf_counter() - start, 1),
    }


class WriteResponses(L.Callback):
    """After fitting, answer the data module's test split into ``path`` (finetune.py), then
    (``judge``) have a judge model score the answers.

    Its ``results()`` (count, mean length, exact matches, judge scores) go into result.json,
    and the first rows into TensorBoard's TEXT tab (tag ``responses``).
    """

    def __init__(self, path: Path, *, max_new_tokens: int = 256, batch_size: int = 8, judge=None) -> None:
        self.path, self.max_new_tokens, self.batch_size = Path(path), max_new_tokens, batch_size
        self.judge = judge  # config.tasks.JudgeConfig: score the responses afterwards (finetune.py)
        self.summary: dict = {}

    def results(self) -> dict:
        return self.summary

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        data = trainer.datamodule
        if not hasattr(data, "test_records"):  # not instruction data: nothing to answer
            return
        path = self.path if trainer.is_global_zero else None  # every rank generates, rank 0 writes
        summary = pl_module.on_every_rank(write_responses, data.test_records, data.template, path,
                                          max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                          device=trainer.strategy.root_device)
        if path is not None:
            log_text_table(trainer, "responses", path, limit=10)
            if self.judge is not None:
                from gpt_lightning.evaluate.judge import judge_after_fit

                summary.update(judge_after_fit(trainer, path, self.judge, path.parent / "judge.jsonl"))
            self.summary = summary
