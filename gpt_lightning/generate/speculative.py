"""Speculative decoding: a small draft model proposes, the target model verifies.

Each round the draft proposes ``k`` tokens one at a time (cheap steps through its own KV
cache); the target then scores the last accepted token and all ``k`` proposals in ONE
forward through its KV cache, which gives its next-token distribution after every prefix.
Proposals are accepted left to right:

- greedy (temperature 0): a proposal is accepted while it equals the target's argmax; the
  first mismatch is replaced by the target's argmax. The output is therefore the target's
  own greedy output, token for token (up to the floating-point rounding of a k-token
  forward vs one-token forwards, ~1e-6 in the logits, which only a near-tie could see).
- sampling: proposal x drawn from the draft's q is accepted with probability
  min(1, p(x) / q(x)), where p is the target's distribution; on the first rejection the
  token is drawn from max(0, p - q), renormalised, and the round ends (Leviathan et al.
  2023, Chen et al. 2023). Every token then follows the target's distribution exactly.

If all k are accepted, the target's distribution after the last one gives one more token
for free. Both distributions go through the same :func:`generation.process_logits`
(repetition penalty over the tokens so far, temperature, top-k, top-p), so the sampled
tokens follow the target's *processed* distribution, as plain ``generate`` does.

Rolling back is free: the caches are preallocated and indexed by position, so a rejected
proposal is forgotten by moving the write position back; the next forward overwrites it.
Rows run one at a time (each accepts a different number of tokens per round). Sampled
text follows the target's distribution but is not the same text as ``generate`` draws
with the same seed (the random numbers are used differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from gpt_lightning.errors import bad_value
from gpt_lightning.generate.sampling import (Decode, OnToken, StopCriteria, _is_int, check_settings, fit_prompts, make_generators, process_logits, sample)
from gpt_lightning.model import GPT


@dataclass
class SpeculativeStats:
    """What the draft achieved: proposals made and accepted, target forwards run."""

    proposed: int = 0
    accepted: int = 0
    target_forwards: int = 0
    new_tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def check_draft(target: GPT, draft: GPT, k: int) -> None:
    """One-line ConfigError unless ``draft`` can propose tokens for ``target`` ``k`` at a time."""
    if not _is_int(k) or k < 1:
        raise bad_value("draft.k", k, "an integer >= 1 (tokens the draft proposes per target forward; 4 is typical)")
    if draft.config.vocab_size != target.config.vocab_size:
        raise bad_value("draft.vocab_size", draft.config.vocab_size,
                        f"the draft must share the target's vocabulary (vocab_size={target.config.vocab_size})")


def speculative_generate(target: GPT, draft: GPT, prompts: Sequence[Sequence[int]], *, k: int = 4,
                         max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                         repetition_penalty: float = 1.0, eos_id: int | None = None,
                         stop_sequences: Sequence[Sequence[int] | str] = (), decode: Decode | None = None,
                         seed: int | Sequence[int] | torch.Generator | None = None,
                         on_token: OnToken | None = None, stats: SpeculativeStats | None = None) -> list[list[int]]:
    """Like :func:`generation.generate` (without beams), with ``draft`` proposing ``k`` tokens
    per target forward. Returns the new tokens of each prompt; ``stats`` (if given) is
    updated with proposals, acceptances and target forwards. Both models run in eval mode
    and their KV caches are removed afterwards."""
    check_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   repetition_penalty=repetition_penalty)
    check_draft(target, draft, k)
    stops = StopCriteria(eos_id, stop_sequences, decode)
    shorter = min(target, draft, key=lambda m: m.config.context_length)  # both caches must hold a row
    fitted, budgets = fit_prompts(prompts, shorter, max_new_tokens)
    generators = make_generators(seed, len(fitted)) if temperature > 0 else [None] * len(fitted)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    stats = stats if stats is not None else SpeculativeStats()
    modes = (target.training, draft.training)
    target.eval()
    draft.eval()
    try:
        with torch.inference_mode():
            return [_one_row(target, draft, row, prompt, budget, k, sampling, stops, gen, on_token, stats)
                    for row, (prompt, budget, gen) in enumerate(zip(fitted, budgets, generators))]
    finally:
        for model, mode in ((target, modes[0]), (draft, modes[1])):
            model.clear_kv_cache()
            model.train(mode)


def _one_row(target: GPT, draft: GPT, row: int, prompt: list[int], budget: int, k: int, sampling: dict,
             stops: StopCriteria, gen: torch.Generator | None, on_token: OnToken | None,
             stats: SpeculativeStats) -> list[int]:
    device = target.wte.weight.device
    greedy = sampling["temperature"] == 0
    tokens, end = list(prompt), len(prompt) + budget
    for model in (target, draft):
        model.setup_kv_cache(1, end)
        if len(prompt) > 1:  # every token but the last is cached; the last is fed with the proposals
            model(torch.tensor([prompt[:-1]], device=device), input_pos=0, last_only=True)
    cached = {"target": len(prompt) - 1, "draft": len(prompt) - 1}  # positions each cache holds
    seen = None
    if sampling["repetition_penalty"] != 1.0:
        seen = torch.zeros(1, target.config.vocab_size, dtype=torch.bool, device=device)  # (1, V)
        seen[0, prompt] = True

    def uniform() -> torch.Tensor:
        return torch.rand(1, generator=gen, dtype=torch.float64)

    def forward(model: GPT, name: str, seq: list[int], last: int) -> torch.Tensor:
        """Feed what ``model`` has not cached of ``seq``; logits (last, V) of its last positions."""
        start = cached[name]
        logits = model(torch.tensor([seq[start:]], device=device), input_pos=start,
                       last_only=last == 1)[0, -last:]  # a draft catching up needs its last logits only
        cached[name] = len(seq)
        return logits

    while True:
        n = min(k, end - len(tokens) - 1)  # proposals this round; one token always comes from the target
        before = len(tokens)
        # ---- the draft proposes n tokens ----
        proposed, q_probs = [], []
        draft_seen = None if seen is None else seen.clone()
        for _ in range(n):
            logits = process_logits(forward(draft, "draft", tokens + proposed, 1), draft_seen, **sampling)  # (1, V)
            if greedy:
                token = int(logits.argmax(-1))
            else:
                token = int(sample(logits, uniform()))
                q_probs.append(torch.softmax(logits[0], dim=-1, dtype=torch.float64))
            proposed.append(token)
            if draft_seen is not None:
                draft_seen[0, token] = True
        # ---- the target scores the last token and every proposal in one forward ----
        logits = forward(target, "target", tokens + proposed, n + 1)  # (n + 1, V)
        stats.target_forwards += 1
        rows_seen = None
        if seen is not None:
            rows_seen = seen.repeat(n + 1, 1)  # row i has seen the proposals before it
            for i, token in enumerate(proposed):
                rows_seen[i + 1:, token] = True
        p_logits = process_logits(logits, rows_seen, **sampling)  # (n + 1, V)
        new = _accept(p_logits, q_probs, proposed, greedy, uniform)
        stats.proposed += n
        stats.accepted += len(new) - 1
        # both caches keep only what is still part of the text: the accepted proposals
        cached["target"] = before + len(new) - 1
        cached["draft"] = min(cached["draft"], before + len(new) - 1)
        for token in new:
            tokens.append(token)
            stats.new_tokens += 1
            if on_token is not None:
                on_token(row, token)
            if stops.hit(tokens[len(prompt):]) or len(tokens) >= end:
                return tokens[len(prompt):]
            if seen is not None:
                seen[0, token] = True


def _accept(p_logits: torch.Tensor, q_probs: list[torch.Tensor], proposed: list[int], greedy: bool,
            uniform) -> list[int]:
    """The tokens this round adds: the accepted proposals, then one token from the target.

    p_logits: (n + 1, V) processed target logits after each prefix; q_probs: n draft
    distributions (V,) the proposals were drawn from (unused when greedy).
    """
    new = []
    for i, token in enumerate(proposed):
        if greedy:
            best = int(p_logits[i].argmax())
            if best != token:
                return new + [best]
        else:
            p = torch.softmax(p_logits[i], dim=-1, dtype=torch.float64)
            q = q_probs[i]
            if float(uniform()) * float(q[token]) >= float(p[token]):  # reject with prob 1 - min(1, p/q)
                return new + [residual_sample(p, q, uniform())]
        new.append(token)
    last = p_logits[len(proposed)].unsqueeze(0)  # every proposal accepted: one more token for free
    return new + [int(last.argmax(-1)) if greedy else int(sample(last, uniform()))]


def residual_sample(p: torch.Tensor, q: torch.Tensor, u: torch.Tensor) -> int:
    """A draw from max(0, p - q) renormalised (p, q: (V,) probabilities, u: (1,) uniform).

    After a rejection this makes the token follow p. If rounding leaves no mass (p == q
    up to rounding, where a rejection is all but impossible), p itself is used.
    """
    residual = (p - q).clamp(min=0)
    if float(residual.sum()) <= 0:
        residual = p
    return int(sample(residual.log().unsqueeze(0), u))
