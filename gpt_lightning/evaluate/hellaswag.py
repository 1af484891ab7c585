"""HellaSwag, completion style: which of 4 endings does the model find most likely?

Two methods (``hellaswag.method``), whose numbers compare with different published ones:

- ``nanogpt`` (the default): as build-nanogpt / llm.c's hellaswag.py. The raw ``ctx`` and each
  ending (with a leading space) are tokenized apart and the ending's tokens scored given the
  context. ``acc`` picks the ending with the highest sum of log-probabilities, ``acc_norm``
  the highest mean per ending *token*. Compare with nanoGPT/llm.c numbers: OpenAI GPT-2 124M
  scores acc_norm 0.2955 = 2967/10042, the reference printed beside init=openai_124m.
- ``lm_eval``: as EleutherAI's lm-evaluation-harness task ``hellaswag``. The text is
  preprocessed (``activity_label: ctx_a Ctx_b``, WikiHow's ``[title]`` and other bracketed
  artefacts removed, double spaces collapsed), context and ending are tokenized together and
  split as lm-eval's ``_encode_pair`` does, and ``acc_norm`` divides the log-probability by
  the ending's length in *characters*. Compare with lm-eval's (and the Open LLM
  Leaderboard's) numbers. On the same items the two methods often pick different endings for
  acc_norm, so never compare a number of one with a number of the other.
"""

from __future__ import annotations

import re

from gpt_lightning.tokenizer import get_tokenizer
from gpt_lightning.evaluate.files import bad_record, dataset_file, read_jsonl
from gpt_lightning.evaluate.tasks import ScoringTask, ratio

FILE = "hellaswag_val.jsonl"
PUBLIC_ITEMS = 10042  # items in the public validation set
REFERENCE = {"openai_124m": ("OpenAI GPT-2 124M", "acc_norm", 2967, 10042)}  # init -> (who, metric, correct, items)
KEY = "hellaswag.path"
METHODS = ("nanogpt", "lm_eval")


def lm_eval_preprocess(text: str) -> str:
    """lm-evaluation-harness's ``hellaswag.utils.preprocess``."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artefacts of HellaSwag's WikiHow part
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def lm_eval_texts(record: dict) -> tuple[str, list[str]]:
    """(query, choices) of lm-eval's ``hellaswag._process_doc`` (a file without ``ctx_a`` /
    ``ctx_b`` uses ``ctx`` as ctx_a)."""
    ctx_a, ctx_b = record.get("ctx_a", record["ctx"]), record.get("ctx_b", "")
    ctx = ctx_a + " " + ctx_b.capitalize()
    query = lm_eval_preprocess(record.get("activity_label", "") + ": " + ctx)
    return query, [lm_eval_preprocess(e) for e in record["endings"]]


def load_records(path: str | None = None, limit: int | None = None) -> list[dict]:
    """Items of ``path`` (or the public validation set) as {"ind", "ctx", "endings", "label"}."""
    file = dataset_file(FILE, path, KEY)
    lines = read_jsonl(file, KEY, limit)
    if not path and limit is None and len(lines) != PUBLIC_ITEMS:
        raise bad_record(KEY, file, len(lines), f"expected {PUBLIC_ITEMS} items, found {len(lines)}")
    items = []
    for number, r in lines:
        endings, label = r.get("endings"), r.get("label")
        if not isinstance(r.get("ctx"), str):
            raise bad_record(KEY, file, number, 'needs "ctx", a string')
        if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) and e for e in endings)):
            raise bad_record(KEY, file, number, 'needs "endings", a list of 4 non-empty strings')
        if not (isinstance(label, int) and not isinstance(label, bool) and 0 <= label < 4):
            raise bad_record(KEY, file, number, f'"label" must be 0, 1, 2 or 3, not {label!r}')
        items.append({"ind": r.get("ind", number - 1), "ctx": r["ctx"], "endings": endings, "label": label,
                      **{k: r[k] for k in ("activity_label", "ctx_a", "ctx_b") if isinstance(r.get(k), str)}})
    return items


class HellaSwag(ScoringTask):
    name = "hellaswag"

    def __init__(self, records: list[dict], method: str = "nanogpt") -> None:
        if method not in METHODS:
            from gpt_lightning.errors import bad_value

            raise bad_value("hellaswag.method", method, f"one of {', '.join(METHODS)} (nanogpt: build-nanogpt/llm.c's "
                            "numbers; lm_eval: lm-evaluation-harness's)")
        self.method = method
        tok = get_tokenizer()
        if method == "nanogpt":
            contexts = tok.encode_batch([r["ctx"] for r in records])
            endings = tok.encode_batch([" " + e for r in records for e in r["endings"]])
            items = [{**r, "ctx_ids": c, "ending_ids": endings[4 * i:4 * i + 4]}
                     for i, (r, c) in enumerate(zip(records, contexts))]
        else:  # lm-eval: context and " " + choice encoded whole, the continuation is what follows the context
            items = []
            for r in records:
                query, choices = lm_eval_texts(r)
                ctx_ids = tok.encode(query)
                wholes = tok.encode_batch([query + " " + c for c in choices])
                items.append({**r, "ctx_ids": ctx_ids, "ending_ids": [w[len(ctx_ids):] for w in wholes],
                              "chars": [len(c) for c in choices]})
        super().__init__(items)

    def groups(self, items):
        return [[(item["ctx_ids"], e) for e in item["ending_ids"]] for item in items]

    def rows(self, items, scored):
        rows = []
        for item, endings in zip(items, scored):
            sums = [s.logprob for s in endings]
            sizes = item.get("chars") or [s.tokens for s in endings]  # lm_eval: characters; nanogpt: tokens
            means = [s.logprob / n for s, n in zip(endings, sizes)]
            pred, pred_norm = sums.index(max(sums)), means.index(max(means))
            rows.append({"ind": item["ind"], "label": item["label"], "pred": pred, "pred_norm": pred_norm,
                         "logprob": sums, "tokens": [s.tokens for s in endings]})
        return rows

    def totals(self, rows):
        return {"n": len(rows), "correct": sum(r["pred"] == r["label"] for r in rows),
                "correct_norm": sum(r["pred_norm"] == r["label"] for r in rows)}

    def metrics(self, t):
        return [("acc", ratio(t["correct"], t["n"]), t["n"]), ("acc_norm", ratio(t["correct_norm"], t["n"]), t["n"])]
