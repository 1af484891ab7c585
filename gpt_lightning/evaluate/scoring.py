"""The scoring core every task shares: log-probabilities of continuations given contexts.

A *pair* is (context ids, continuation ids); the model reads ``context + continuation`` and
we add up ``log p(continuation token | everything before it)``. Pairs come in *groups* (the
4 endings of a HellaSwag item, one LAMBADA passage, one perplexity window) so that progress
and batches count whole items. Groups are sorted by length and packed into batches of at
most ``batch_size`` sequences, right-padded (causal attention never lets a real position
see the padding after it), and run with one forward per batch. Only the positions that
predict a continuation token go through the output layer and the log-softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPT

Pair = tuple[Sequence[int], Sequence[int]]
BATCH_SIZE = 16  # sequences per forward by default (evaluate.yaml and callbacks.eval say the same; tested)


@dataclass(frozen=True)
class Scored:
    """One continuation: the sum of its tokens' log-probabilities (natural log), its token
    count, and whether greedy decoding would have produced every one of its tokens."""

    logprob: float
    tokens: int
    greedy: bool


def _sequence(pair: Pair, context_length: int) -> tuple[list[int], int]:
    """``context + continuation`` cut from the left to fit the model, and the continuation length."""
    context, continuation = list(pair[0]), list(pair[1])
    if not continuation:
        raise ValueError("a continuation needs at least one token")
    if not context:
        raise ValueError("a context needs at least one token (e.g. <|endoftext|>) to predict the first one from")
    if len(continuation) > context_length:
        raise bad_value("continuation", f"{len(continuation)} tokens",
                        f"at most model.context_length={context_length} tokens")
    return (context + continuation)[-(context_length + 1):], len(continuation)


def _batches(lengths: list[int], sizes: list[int], batch_size: int) -> list[list[int]]:
    """Group indices, longest first, packed so a batch holds at most ``batch_size`` sequences
    (a group larger than that gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda g: -lengths[g])
    batches, current, rows = [], [], 0
    for g in order:
        if current and rows + sizes[g] > batch_size:
            batches.append(current)
            current, rows = [], 0
        current.append(g)
        rows += sizes[g]
    if current:
        batches.append(current)
    return batches


def _logits_at(model: GPT, inputs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits (N, V) at positions (rows[i], cols[i]) of one forward over ``inputs`` (B, T).

    A pre-hook on the output layer hands it only those positions' hidden states, so the
    vocabulary projection (a large share of the work, and B x T x V floats) is spent only
    where a continuation token is predicted.
    """
    handle = model.lm_head.register_forward_pre_hook(lambda _module, args: (args[0][rows, cols],))
    try:
        return model(inputs)
    finally:
        handle.remove()


@torch.inference_mode()
def score_groups(model: GPT, groups: Sequence[Sequence[Pair]], *, batch_size: int = BATCH_SIZE,
                 progress: Callable[[int], None] | None = None) -> list[list[Scored]]:
    """``Scored`` for every pair of every group, in the order given.

    ``progress(n)`` is called after each forward with the number of groups it finished.
    The model runs in eval mode (restored afterwards) on the device of its weights.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise bad_value("batch_size", batch_size, "an integer >= 1")
    C = model.config.context_length
    seqs = [[_sequence(pair, C) for pair in group] for group in groups]
    lengths = [max((len(s) for s, _ in group), default=0) for group in seqs]
    sizes = [len(group) for group in seqs]
    device = next(model.parameters()).device
    results: list[list[Scored]] = [[] for _ in groups]
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(lengths, sizes, batch_size):
            rows = [(g, s, n) for g in batch for s, n in seqs[g]]
            if not rows:
                continue
            T = max(len(s) for _, s, _ in rows) - 1
            inputs = torch.zeros(len(rows), T, dtype=torch.long)
            row_idx, col_idx, targets = [], [], []
            for r, (_, s, n) in enumerate(rows):
                inputs[r, :len(s) - 1] = torch.tensor(s[:-1])
                first = len(s) - 1 - n  # the position that predicts the first continuation token
                row_idx += [r] * n
                col_idx += range(first, first + n)
                targets += s[-n:]
            picked = _logits_at(model, inputs.to(device), torch.tensor(row_idx, device=device),
                                torch.tensor(col_idx, device=device)).float()  # (N, V)
            target = torch.tensor(targets, device=device)
            token_lp = picked.log_softmax(-1).gather(1, target[:, None]).squeeze(1).double().cpu()  # (N,)
            hits = (picked.argmax(-1) == target).cpu()
            at = 0
            for g, _, n in rows:
                results[g].append(Scored(float(token_lp[at:at + n].sum()), n, bool(hits[at:at + n].all())))
                at += n
            if progress is not None:
                progress(len(batch))
    finally:
        model.train(was_training)
    return results


def score_pairs(model: GPT, pairs: Sequence[Pair], *, batch_size: int = BATCH_SIZE,
                progress: Callable[[int], None] | None = None) -> list[Scored]:
    """``Scored`` for each pair (each pair its own group)."""
    return [group[0] for group in score_groups(model, [[p] for p in pairs], batch_size=batch_size,
                                               progress=progress)]
