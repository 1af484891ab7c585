"""Perplexity of text: loss, perplexity and bits per byte, every token scored once.

Each file is tokenized whole and read as ``<|endoftext|>`` + its tokens, so its first token
is predicted too. Window k reads the ``context`` ids from ``k * stride`` on (the usual
strided-perplexity recipe): the first scores tokens 1..context, each next one the
``stride`` tokens after those already scored, with the ``context - stride + 1`` before them
as unscored history. ``stride = context`` gives non-overlapping windows.

    loss          = sum of -log p(token) / tokens            (nats per token)
    perplexity    = exp(loss)
    bits_per_byte = sum of -log2 p(token) / UTF-8 bytes of the text
"""

from __future__ import annotations

import math
from pathlib import Path

from gpt_lightning.data.pretrain import CORPORA
from gpt_lightning.data.token_cache import expand_paths
from gpt_lightning.download import fetch_dataset
from gpt_lightning.errors import ConfigError, bad_value
from gpt_lightning.tokenizer import get_tokenizer
from gpt_lightning.evaluate.tasks import ScoringTask, ratio


def text_files(path: str | None, data: str | None) -> list[Path]:
    """The files ``text.path`` names (file, folder or glob), or the public corpus ``text.data``."""
    if bool(path) == bool(data):
        raise ConfigError("task=perplexity needs text.path=<a file, folder or glob> or text.data="
                          f"<{' | '.join(sorted(CORPORA))}> (one of the two)")
    if data:
        if data not in CORPORA:
            raise bad_value("text.data", data, f"one of {sorted(CORPORA)}")
        return [fetch_dataset(CORPORA[data])]
    try:
        return expand_paths(str(path))
    except ConfigError:
        raise ConfigError(f"text.path={str(path)!r} matches no file (give a file, a folder or a glob)") from None


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(history start, first scored, end) over a sequence of ``n`` ids whose id 0 is a start token.

    The windows score ids 1..n-1, each exactly once; a window's input is
    ``ids[start:end - 1]`` (at most ``context`` ids) and it scores ``ids[first:end]``.
    """
    if not 1 <= stride <= context:
        raise bad_value("text.stride", stride, f"between 1 and the model's context length ({context})")
    spans, first, start = [], 1, 0
    while first < n:  # window k reads ids[k * stride : k * stride + context]
        end = min(start + context + 1, n)
        spans.append((start, first, end))
        first, start = end, start + stride
    return spans


class Perplexity(ScoringTask):
    """Items are windows; each row says which file, which tokens, their NLL and bytes."""

    name = "perplexity"

    def __init__(self, files: list[Path], context: int, stride: int | None = None) -> None:
        tok = get_tokenizer()
        stride = context if stride is None else stride
        items = []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"text.path: {path} is not UTF-8 text (byte {err.start})") from None
            ids = [tok.eot_id] + tok.encode(text)
            for start, first, end in windows(len(ids), context, stride):
                items.append({"file": str(path), "first": first, "ctx_ids": ids[start:first], "ids": ids[first:end],
                              "bytes": len(tok.decode_bytes(ids[first:end]))})
        if not items:
            raise ConfigError(f"text.path: {', '.join(map(str, files))} holds no text to score")
        super().__init__(items)

    def groups(self, items):
        return [[(item["ctx_ids"], item["ids"])] for item in items]

    def rows(self, items, scored):
        return [{"file": item["file"], "first_token": item["first"], "tokens": s.tokens, "nll": -s.logprob,
                 "bytes": item["bytes"]} for item, (s,) in zip(items, scored)]

    def totals(self, rows):
        return {"nll": sum(r["nll"] for r in rows), "tokens": sum(r["tokens"] for r in rows),
                "bytes": sum(r["bytes"] for r in rows)}

    def metrics(self, t):
        loss, tokens = ratio(t["nll"], t["tokens"]), int(t["tokens"])
        bpb = ratio(t["nll"] / math.log(2), t["bytes"])
        return [("loss", loss, tokens), ("perplexity", math.exp(loss) if loss is not None else None, tokens),
                ("bits_per_byte", bpb, tokens)]
