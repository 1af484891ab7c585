"""LAMBADA (OpenAI's test set): predict the last word of a passage.

The last word is the text after the last space; context and `` <word>`` are tokenized apart.
``acc``: greedy decoding gives every token of the word. ``perplexity``: exp of the mean over
passages of the word's negative log-likelihood (its tokens' log-probabilities summed), the
per-word perplexity lm-evaluation-harness reports.
"""

from __future__ import annotations

import math

from gpt_lightning.tokenizer import get_tokenizer
from gpt_lightning.evaluate.files import bad_record, dataset_file, read_jsonl
from gpt_lightning.evaluate.tasks import ScoringTask, ratio

FILE = "lambada_test.jsonl"
PUBLIC_ITEMS = 5153
KEY = "lambada.path"


def split_last_word(text: str) -> tuple[str, str]:
    """(context, last word): the word is what follows the last space."""
    context, _, word = text.rpartition(" ")
    return context, word


def load_records(path: str | None = None, limit: int | None = None) -> list[dict]:
    file = dataset_file(FILE, path, KEY)
    lines = read_jsonl(file, KEY, limit)
    if not path and limit is None and len(lines) != PUBLIC_ITEMS:
        raise bad_record(KEY, file, len(lines), f"expected {PUBLIC_ITEMS} passages, found {len(lines)}")
    items = []
    for number, r in lines:
        text = r.get("text")
        if not isinstance(text, str):
            raise bad_record(KEY, file, number, 'needs "text", a string')
        context, word = split_last_word(text.strip())
        if not context or not word:
            raise bad_record(KEY, file, number, "the text needs a space before its last word")
        items.append({"index": number - 1, "context": context, "word": word})
    return items


class Lambada(ScoringTask):
    name = "lambada"

    def __init__(self, records: list[dict]) -> None:
        tok = get_tokenizer()
        contexts = tok.encode_batch([r["context"] for r in records])
        words = tok.encode_batch([" " + r["word"] for r in records])
        super().__init__([{**r, "ctx_ids": c, "word_ids": w} for r, c, w in zip(records, contexts, words)])

    def groups(self, items):
        return [[(item["ctx_ids"], item["word_ids"])] for item in items]

    def rows(self, items, scored):
        return [{"index": item["index"], "word": item["word"], "correct": s.greedy, "logprob": s.logprob,
                 "tokens": s.tokens} for item, (s,) in zip(items, scored)]

    def totals(self, rows):
        return {"n": len(rows), "correct": sum(r["correct"] for r in rows), "nll": -sum(r["logprob"] for r in rows)}

    def metrics(self, t):
        mean_nll = ratio(t["nll"], t["n"])
        return [("acc", ratio(t["correct"], t["n"]), t["n"]),
                ("perplexity", math.exp(mean_nll) if mean_nll is not None else None, t["n"])]
