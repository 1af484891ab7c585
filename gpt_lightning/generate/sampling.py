"""Text generation with the KV cache: greedy, sampling, beam search and streaming.

Shapes in comments use: B rows decoded together (prompts, or beams of one prompt),
L longest prompt of a batch, V vocabulary size.

How a batch runs. Prompts of different lengths are LEFT-padded to the same length L, so
every row's next token sits in the last column. An attention mask hides the padding and
per-row position ids start each prompt at position 0, so a row sees exactly what it
would see alone. The prompt runs through the model once (prefill) and fills the
preallocated KV cache; after that every step feeds one token per row. A row that hits
``eos_id``, a stop sequence or its token budget is finished: it is dropped from the batch
(its cache row too), so it costs nothing afterwards. Without padding the model takes its
mask-free attention path.

Context limit (no sliding window). A prompt that leaves no room for a new token keeps its
last ``context_length - 1`` tokens, with a warning, and a row stops once prompt + new
tokens reach ``context_length`` (also with a warning). GPT-2's positions are absolute, so
sliding would mean recomputing the whole window for every token; stopping is honest.

Reproducibility. Each row draws from its own ``torch.Generator`` (one uniform number per
sampled token), seeded ``seed + row``. Greedy results of a batch equal the results of each
prompt alone; sampled results do too, because a row consumes the same random numbers
whatever else is in the batch. "Equal" holds up to floating-point rounding of the
logits (padded and unpadded batches use different kernels, ~1e-6): two candidates whose
logits (greedy) or cumulative probabilities (sampling) differ by less than that may
resolve differently, which essentially never happens but is not excluded.

Beam search follows transformers' ``num_beams`` search (``early_stopping=False``) and
returns the same tokens; it runs one prompt at a time with its beams as the batch.
On CPUs, :func:`to_inference_layout` makes decoding faster without changing results.
"""

from __future__ import annotations

import codecs
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from gpt_lightning.errors import bad_value
from gpt_lightning.model import GPT

Decode = Callable[[list[int]], str]
OnToken = Callable[[int, int], None]  # (row index in the prompts list, token id)


# ---- settings ----------------------------------------------------------------------
def check_settings(*, max_new_tokens: int = 1, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, repetition_penalty: float = 1.0, num_beams: int = 1,
                   length_penalty: float = 1.0) -> None:
    """Raise a one-line ConfigError naming the first value that cannot work."""
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise bad_value("max_new_tokens", max_new_tokens, "an integer >= 1")
    if not _is_number(temperature) or temperature < 0:
        raise bad_value("temperature", temperature, "a number >= 0 (0 = greedy, 1 = the model's distribution)")
    if not _is_int(top_k) or top_k < 0:
        raise bad_value("top_k", top_k, "an integer >= 0 (0 = off)")
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise bad_value("top_p", top_p, "a number in (0, 1] (1 = off)")
    if not _is_number(repetition_penalty) or repetition_penalty <= 0:
        raise bad_value("repetition_penalty", repetition_penalty, "a number > 0 (1 = off, 1.1-1.3 is typical)")
    if not _is_int(num_beams) or num_beams < 1:
        raise bad_value("num_beams", num_beams, "an integer >= 1 (1 = no beam search)")
    if not _is_number(length_penalty):
        raise bad_value("length_penalty", length_penalty, "a number (1.0 = average log-prob per token)")
    if num_beams > 1 and temperature > 0:
        raise bad_value("num_beams", num_beams,
                        f"beam search is deterministic; set temperature=0 (got temperature={temperature}) "
                        "or num_beams=1 to sample")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- logits processing (B, V) -> (B, V) --------------------------------------------
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: for tokens already in the sequence, divide a positive logit by
    ``penalty`` and multiply a negative one by it (both lower the token for penalty > 1).

    logits: (B, V) float; seen: (B, V) bool, True where the token occurs (prompt included).
    """
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th are kept); 0 = off."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their probability reaches ``p``.

    A token is kept when the tokens ranked above it hold less than ``p`` in total, so the
    most likely token always survives and ``p`` = 1 keeps everything.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # (B, V) probability of the better-ranked tokens
    drop_sorted = mass_above >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``, safe for every positive temperature: the row's maximum is
    subtracted first and the division runs in float64, so a tiny temperature (1e-40, below
    float32's range) gives 0 for the most likely token and -inf for the others (greedy)
    instead of inf - inf = NaN."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return (shifted.double() / temperature).float()


def process_logits(logits: torch.Tensor, seen: torch.Tensor | None, *, temperature: float,
                   top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0) -> torch.Tensor:
    """Repetition penalty, then temperature, top-k and top-p, in that order (as transformers).

    Returns float32 logits (B, V) whose softmax is the distribution to sample from; with
    temperature 0 (greedy) only the penalty applies, because the filters never remove
    the most likely token.
    """
    logits = logits.float()
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, repetition_penalty)
    if temperature == 0:
        return logits
    logits = scale(logits, temperature)
    return filter_top_p(filter_top_k(logits, top_k), top_p)


def sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one token per row from softmax(logits) by inverting its cumulative distribution.

    logits: (B, V) processed logits (filtered tokens at -inf have probability exactly 0);
    uniforms: (B,) float64 in [0, 1), one per row. Returns (B,) token ids. The row's token
    is the first whose cumulative probability exceeds u * total, so a zero-probability
    token can never be drawn and the same u always gives the same token.
    """
    cdf = torch.softmax(logits, dim=-1, dtype=torch.float64).cumsum(dim=-1)  # (B, V)
    target = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(1)  # (B, 1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[-1] - 1)


def make_generators(seed: int | Sequence[int] | torch.Generator | None, n: int) -> list[torch.Generator]:
    """One CPU generator per row: ``seed + row`` for an int, the given seeds for a list,
    seeds drawn from a torch.Generator, or from torch's global RNG when None (so
    ``torch.manual_seed`` also makes runs repeat)."""
    if isinstance(seed, torch.Generator) or seed is None:
        seeds = torch.randint(0, 2**62, (n,), generator=seed).tolist()
    elif _is_int(seed):
        seeds = [seed + i for i in range(n)]
    else:
        seeds = list(seed)
        if len(seeds) != n or not all(_is_int(s) for s in seeds):
            raise bad_value("seed", seed, f"an int, a torch.Generator, or a list of {n} ints (one per prompt)")
    return [torch.Generator().manual_seed(s) for s in seeds]


def _draw_uniforms(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])  # (B,)


# ---- stopping ----------------------------------------------------------------------
class StopCriteria:
    """When a row is finished: ``eos_id``, a stop sequence of token ids, or a stop string.

    Strings are matched in the decoded new text (never in the prompt), which needs a
    ``decode`` callback; the token that completes the string may also carry text after it,
    so callers cut the text with :func:`trim_at_stop`.
    """

    def __init__(self, eos_id: int | None = None, stop_sequences: Sequence[Sequence[int] | str] = (),
                 decode: Decode | None = None) -> None:
        self.eos_id = eos_id
        self.token_seqs = [list(s) for s in stop_sequences if not isinstance(s, str)]
        self.strings = [s for s in stop_sequences if isinstance(s, str)]
        if any(len(s) == 0 for s in self.token_seqs) or "" in self.strings:
            raise bad_value("stop", list(stop_sequences), "non-empty strings or token-id lists")
        if self.strings and decode is None:
            raise bad_value("stop", self.strings, "stop strings need a decode callback (e.g. tokenizer.decode)")
        self.decode = decode
        # a string of c characters spans at most 4c UTF-8 bytes, hence at most 4c tokens
        self.window = max((4 * len(s) for s in self.strings), default=0)

    def hit(self, new: list[int]) -> bool:
        """True if the new tokens ``new`` (prompt excluded) end the row at their last token."""
        if new[-1] == self.eos_id:
            return True
        if any(new[-len(s):] == s for s in self.token_seqs):
            return True
        if self.strings:
            tail = self.decode(new[-self.window:])
            return any(s in tail for s in self.strings)
        return False


def trim_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


# ---- streaming ---------------------------------------------------------------------
class StreamDecoder:
    """Turn tokens into printable text as they arrive, one ``push`` per token.

    Byte-level BPE tokens may end in the middle of a UTF-8 character, so bytes are fed to
    an incremental UTF-8 decoder that only releases complete characters. Text that could be
    the beginning of a stop string is held back until it is known not to be one, and
    nothing after a stop string is ever released.

        stream = StreamDecoder(tok.decode_bytes, skip_ids={tok.eot_id}, stop_strings=["\\n\\n"])
        for t in tokens: print(stream.push(t), end="")
        print(stream.finish())
    """

    def __init__(self, decode_bytes: Callable[[list[int]], bytes], *, skip_ids=(),
                 stop_strings: Sequence[str] = ()) -> None:
        self.decode_bytes = decode_bytes
        self.skip_ids = set(skip_ids)
        self.stop_strings = list(stop_strings)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped or token in self.skip_ids:
            return ""
        return self._release(self._held + self._utf8.decode(self.decode_bytes([token])), final=False)

    def finish(self) -> str:
        """The rest: held-back text and an incomplete character (as U+FFFD)."""
        if self.stopped:
            return ""
        return self._release(self._held + self._utf8.decode(b"", final=True), final=True)

    def _release(self, text: str, final: bool) -> str:
        trimmed = trim_at_stop(text, self.stop_strings)
        if len(trimmed) < len(text):
            self.stopped, self._held = True, ""
            return trimmed
        hold = 0 if final else self._partial_stop_length(text)
        self._held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        for n in range(min(len(text), max((len(s) for s in self.stop_strings), default=1) - 1), 0, -1):
            if any(s.startswith(text[-n:]) for s in self.stop_strings):
                return n
        return 0


# ---- prompts and the context window ------------------------------------------------
def fit_prompts(prompts: Sequence[Sequence[int]], model: GPT, max_new_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Check token ids, keep the last ``context_length - 1`` tokens of over-long prompts and
    return (prompts, new-token budget of each), warning when the context cuts something."""
    ctx, vocab = model.config.context_length, model.config.vocab_size
    if not prompts:
        raise bad_value("prompts", list(prompts), "at least one prompt")
    fitted, budgets = [], []
    for i, prompt in enumerate(prompts):
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise bad_value(f"prompts[{i}]", prompt, "at least one token (start from [eos_id] for free text)")
        if min(prompt) < 0 or max(prompt) >= vocab:
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise bad_value(f"prompts[{i}] token", bad, f"ids in [0, {vocab}) (model.vocab_size={vocab})")
        if len(prompt) >= ctx:
            warnings.warn(f"prompt {i} has {len(prompt)} tokens but model.context_length={ctx}; "
                          f"keeping its last {ctx - 1} to leave room for new tokens", stacklevel=3)
            prompt = prompt[-(ctx - 1):]
        budget = min(max_new_tokens, ctx - len(prompt))
        if budget < max_new_tokens:
            warnings.warn(f"prompt {i} ({len(prompt)} tokens) leaves room for {budget} of "
                          f"max_new_tokens={max_new_tokens} within model.context_length={ctx}; "
                          "generation stops there", stacklevel=3)
        fitted.append(prompt)
        budgets.append(budget)
    return fitted, budgets


# ---- the model ---------------------------------------------------------------------
def to_inference_layout(model: GPT) -> GPT:
    """Store every Linear weight column-major, the (in, out) memory order of GPT-2's Conv1D.

    Shapes, values and results stay the same: ``F.linear`` then hands BLAS an untransposed
    (in, out) matrix, which CPU BLAS multiplies by a few rows (decoding) up to ~1.5x faster
    (2x for the LM head at batch 8). The tied token embedding follows the head; looking up
    a few rows in it stays cheap. Meant for models that only generate (generate.py does it
    on CPUs); ``save_pretrained`` writes the same files as before. Returns ``model``.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.t().contiguous().t()
    return model


# ---- the KV cache ------------------------------------------------------------------
def select_cache_rows(model: GPT, index: torch.Tensor, used: int) -> None:
    """Make cache row i a copy of row ``index[i]`` (first ``used`` positions), in every block.

    Beam search uses it to follow the chosen beams; batches use it to drop finished rows.
    The rows are written into the front of the preallocated buffers, whose later rows are
    simply left unused.
    """
    for block in model.blocks:
        cache = block.attn.cache
        for buf in (cache.k, cache.v):  # (B, H, S, D)
            buf[: len(index), :, :used] = buf[:, :, :used].index_select(0, index)


# ---- greedy and sampling -----------------------------------------------------------
@dataclass
class _Row:
    """One prompt being continued."""

    index: int  # position in the caller's list of prompts
    tokens: list[int]  # prompt + new tokens so far
    prompt_len: int
    budget: int  # new tokens allowed
    generator: torch.Generator | None  # None when greedy
    done: bool = False

    @property
    def new(self) -> list[int]:
        return self.tokens[self.prompt_len:]


def generate(model: GPT, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             repetition_penalty: float = 1.0, num_beams: int = 1, length_penalty: float = 1.0,
             eos_id: int | None = None, stop_sequences: Sequence[Sequence[int] | str] = (),
             decode: Decode | None = None, seed: int | Sequence[int] | torch.Generator | None = None,
             on_token: OnToken | None = None) -> list[list[int]]:
    """Continue each prompt (a list of token ids); return the new tokens of each.

    temperature 0 is greedy; otherwise tokens are sampled after the repetition penalty,
    temperature, top_k and top_p. ``num_beams`` > 1 runs :func:`beam_search` per prompt.
    A row ends at ``eos_id``, at a stop sequence (token-id lists, or strings matched in
    ``decode(new tokens)``), after ``max_new_tokens`` or at the context limit; its result
    includes the token that ended it. ``on_token(row, token)`` is called for every new
    token as soon as it exists (beam search: for the chosen tokens once a prompt is done).
    The model is used in eval mode and its KV cache is removed afterwards.
    """
    check_settings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   repetition_penalty=repetition_penalty, num_beams=num_beams, length_penalty=length_penalty)
    stops = StopCriteria(eos_id, stop_sequences, decode)
    fitted, budgets = fit_prompts(prompts, model, max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if num_beams > 1:
                return [_beam_search_one(model, p, b, i, num_beams, length_penalty, repetition_penalty, stops, on_token)
                        for i, (p, b) in enumerate(zip(fitted, budgets))]
            generators = make_generators(seed, len(fitted)) if temperature > 0 else [None] * len(fitted)
            rows = [_Row(i, list(p), len(p), b, g) for i, (p, b, g) in enumerate(zip(fitted, budgets, generators))]
            sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
            # One pass normally finishes every row. A padded batch can run out of cache
            # positions (the padding counts) before a short row reaches its own context
            # limit; the rows left over continue in a new, less padded batch.
            while pending := [r for r in rows if not r.done]:
                _decode_batch(model, pending, sampling, stops, on_token)
            return [r.new for r in rows]
    finally:
        model.clear_kv_cache()
        model.train(was_training)


def _decode_batch(model: GPT, rows: list[_Row], sampling: dict, stops: StopCriteria,
                  on_token: OnToken | None) -> None:
    """Prefill ``rows`` together, then decode one token per step until each is done or
    the cache is full. Finished rows leave the batch (and the cache) at once."""
    device = model.wte.weight.device
    lengths = torch.tensor([len(r.tokens) for r in rows], device=device)  # (B,)
    L = int(lengths.max())
    cache_len = min(model.config.context_length, L + max(r.budget - len(r.new) for r in rows))
    model.setup_kv_cache(len(rows), cache_len)

    idx = torch.zeros(len(rows), L, dtype=torch.long, device=device)  # (B, L), left-padded
    for i, r in enumerate(rows):
        idx[i, L - len(r.tokens):] = torch.tensor(r.tokens, device=device)
    # True for real tokens over every cache slot; slots after the prompts are all real.
    mask = torch.arange(cache_len, device=device) >= (L - lengths).unsqueeze(1)  # (B, cache_len)
    padded = bool((lengths < L).any())
    positions = (mask[:, :L].cumsum(1) - 1).clamp(min=0) if padded else None  # (B, L)
    logits = model(idx, input_pos=0, position_ids=positions, attention_mask=mask[:, :L] if padded else None,
                   last_only=True)[:, -1]  # (B, V)
    next_pos = lengths.unsqueeze(1)  # (B, 1) position of the token fed next

    seen = None
    if sampling["repetition_penalty"] != 1.0:
        seen = torch.zeros(len(rows), model.config.vocab_size, dtype=torch.bool, device=device)  # (B, V)
        for i, r in enumerate(rows):
            seen[i, r.tokens] = True

    pos = L  # next cache slot
    while True:
        tokens = next_tokens(logits, seen, [r.generator for r in rows], sampling)  # (B,)
        for r, t in zip(rows, tokens.tolist()):
            r.tokens.append(t)
            if on_token is not None:
                on_token(r.index, t)
            r.done = stops.hit(r.new) or len(r.new) >= r.budget
        keep = [i for i, r in enumerate(rows) if not r.done]
        if not keep or pos >= cache_len:
            return
        if seen is not None:
            seen[torch.arange(len(rows), device=device), tokens] = True
        if len(keep) < len(rows):
            rows = [rows[i] for i in keep]
            index = torch.tensor(keep, device=device)
            select_cache_rows(model, index, pos)
            tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
            seen = None if seen is None else seen[index]
            padded = bool((~mask[:, :L]).any())
        logits = model(tokens.unsqueeze(1), input_pos=pos,
                       position_ids=next_pos if padded else None,
                       attention_mask=mask[:, :pos + 1] if padded else None)[:, -1]  # (B, V)
        next_pos = next_pos + 1
        pos += 1


def next_tokens(logits: torch.Tensor, seen: torch.Tensor | None, generators: Sequence[torch.Generator | None],
                sampling: dict) -> torch.Tensor:
    """(B,) next token of each row: argmax when greedy, else a draw from the row's generator.

    logits: (B, V) raw; seen: (B, V) bool tokens so far (None without a repetition penalty);
    sampling: temperature, top_k, top_p, repetition_penalty (see :func:`process_logits`).
    The serving scheduler calls it too, so a served row is chosen exactly as here.
    """
    logits = process_logits(logits, seen, **sampling)
    if sampling["temperature"] == 0:
        return logits.argmax(dim=-1)
    return sample(logits, _draw_uniforms(list(generators)))


# ---- beam search -------------------------------------------------------------------
def beam_search(model: GPT, prompt: Sequence[int], *, num_beams: int, max_new_tokens: int = 64,
                length_penalty: float = 1.0, repetition_penalty: float = 1.0, eos_id: int | None = None,
                stop_sequences: Sequence[Sequence[int] | str] = (), decode: Decode | None = None) -> list[int]:
    """The new tokens of the best beam for one prompt (see :func:`generate` for the rest)."""
    return generate(model, [prompt], max_new_tokens=max_new_tokens, temperature=0.0,
                    repetition_penalty=repetition_penalty, num_beams=num_beams, length_penalty=length_penalty,
                    eos_id=eos_id, stop_sequences=stop_sequences, decode=decode)[0]


def _beam_search_one(model: GPT, prompt: list[int], budget: int, row: int, num_beams: int,
                     length_penalty: float, repetition_penalty: float, stops: StopCriteria,
                     on_token: OnToken | None) -> list[int]:
    """Beam search as transformers does it (``early_stopping=False``).

    Each step ranks the 2 * k best continuations of all beams by summed log-prob. Those
    that end (eos, stop, budget) and rank among the first k become finished hypotheses
    scored ``sum_logprobs / new_len ** length_penalty``; the best k that do not end are the
    next beams, and the cache rows follow them. The search stops when k hypotheses are
    finished and the best running beam, scored at its current length, cannot beat the
    worst of them. num_beams=1 therefore reproduces greedy decoding. A repetition penalty
    multiplies the log-probabilities of seen tokens, as transformers' beam search does
    (greedy decoding and sampling penalise the logits, as transformers does there too).
    """
    k, device = num_beams, model.wte.weight.device
    model.setup_kv_cache(k, len(prompt) + budget)
    logits = model(torch.tensor([prompt], device=device), input_pos=0, last_only=True)[:, -1]  # (1, V): one beam yet
    vocab = logits.shape[-1]
    beams, scores = [[]], torch.zeros(1, device=device)  # new tokens and summed log-probs per beam
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
        seen[0, prompt] = True
    finished: list[tuple[float, list[int]]] = []  # (score, new tokens), best first, at most k
    for step in range(1, budget + 1):
        # As transformers: the penalty acts on the log-probabilities (all <= 0, so a seen
        # token's is multiplied by the penalty), not on the logits before log_softmax.
        logprobs = logits.float().log_softmax(dim=-1)  # (beams, V)
        if seen is not None:
            logprobs = apply_repetition_penalty(logprobs, seen, repetition_penalty)
        totals = (scores.unsqueeze(1) + logprobs).flatten()  # (beams * V,)
        top = totals.topk(min(2 * k, totals.numel()))
        next_beams, sources, next_scores = [], [], []
        for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            seq = beams[flat // vocab] + [flat % vocab]
            if stops.hit(seq) or step == budget:
                if rank < k:
                    finished.append((score / step ** length_penalty, seq))
            elif len(next_beams) < k:
                next_beams.append(seq)
                sources.append(flat // vocab)
                next_scores.append(score)
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:k]
        if not next_beams:
            break
        if len(finished) == k and next_scores[0] / step ** length_penalty <= finished[-1][0]:
            break  # no running beam can still beat the worst finished one
        index = torch.tensor(sources, device=device)
        select_cache_rows(model, index, len(prompt) + step - 1)
        tokens = torch.tensor([b[-1] for b in next_beams], device=device)  # (k,)
        if seen is not None:
            seen = seen[index]
            seen[torch.arange(len(index), device=device), tokens] = True
        beams, scores = next_beams, torch.tensor(next_scores, device=device)
        logits = model(tokens.unsqueeze(1), input_pos=len(prompt) + step - 1)[:, -1]  # (k, V)
    best = finished[0][1]
    if on_token is not None:
        for t in best:
            on_token(row, t)
    return best
