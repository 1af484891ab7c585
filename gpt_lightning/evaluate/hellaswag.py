"""HellaSwag, completion style: which of 4 endings does the model find most likely?

For each item the context and each ending (with a leading space) are tokenized apart and the
ending's tokens scored given the context. ``acc`` picks the ending with the highest sum of
log-probabilities, ``acc_norm`` the highest mean per ending token (as in nanoGPT / llm.c's
hellaswag.py, whose OpenAI GPT-2 124M result, acc_norm 0.2955 = 2967/10042, is the
reference printed beside init=openai_124m).
"""

from __future__ import annotations

from gpt_lightning.tokenizer import get_tokenizer
from gpt_lightning.evaluate.files import bad_record, dataset_file, read_jsonl
from gpt_lightning.evaluate.tasks import ScoringTask, ratio

FILE = "hellaswag_val.jsonl"
PUBLIC_ITEMS = 10042  # items in the public validation set
REFERENCE = {"openai_124m": ("OpenAI GPT-2 124M", "acc_norm", 2967, 10042)}  # init -> (who, metric, correct, items)
KEY = "hellaswag.path"


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
        items.append({"ind": r.get("ind", number - 1), "ctx": r["ctx"], "endings": endings, "label": label})
    return items


class HellaSwag(ScoringTask):
    name = "hellaswag"

    def __init__(self, records: list[dict]) -> None:
        tok = get_tokenizer()
        contexts = tok.encode_batch([r["ctx"] for r in records])
        endings = tok.encode_batch([" " + e for r in records for e in r["endings"]])
        super().__init__([{**r, "ctx_ids": c, "ending_ids": endings[4 * i:4 * i + 4]}
                          for i, (r, c) in enumerate(zip(records, contexts))])

    def groups(self, items):
        return [[(item["ctx_ids"], e) for e in item["ending_ids"]] for item in items]

    def rows(self, items, scored):
        rows = []
        for item, endings in zip(items, scored):
            sums = [s.logprob for s in endings]
            means = [s.logprob / s.tokens for s in endings]
            pred, pred_norm = sums.index(max(sums)), means.index(max(means))
            rows.append({"ind": item["ind"], "label": item["label"], "pred": pred, "pred_norm": pred_norm,
                         "logprob": sums, "tokens": [s.tokens for s in endings]})
        return rows

    def totals(self, rows):
        return {"n": len(rows), "correct": sum(r["pred"] == r["label"] for r in rows),
                "correct_norm": sum(r["pred_norm"] == r["label"] for r in rows)}

    def metrics(self, t):
        return [("acc", ratio(t["correct"], t["n"]), t["n"]), ("acc_norm", ratio(t["correct_norm"], t["n"]), t["n"])]
