"""Continuous batching: one thread owns the model and decodes every running sequence together.

Each turn of the loop admits waiting sequences while the batch has room (the prompts admitted
together are prefilled in one padded forward and their first tokens chosen), then runs one
decode step for all rows. A
sequence that ends (end-of-text, a stop string, its token budget) or is cancelled (its
client went away) leaves the batch before the next step. A sequence's tokens are chosen by
:func:`gpt_lightning.generate.sampling.next_tokens` with its own settings, its own
``torch.Generator`` and its own repetition-penalty state, so they are the tokens ``generate``
gives for its prompt alone, whatever else runs in the batch.

Other threads talk to it through :meth:`Scheduler.submit` and ``Sequence.cancelled``; it
answers through each sequence's ``on_event(kind, value)`` callback, called on the scheduler
thread: ``("token", id)`` for every new token, then one ``("done", reason)`` with reason
"stop" (end-of-text or a stop string), "length" (``max_tokens`` or the context),
"cancelled", or ``("error", message)`` if the model failed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from gpt_lightning.generate.sampling import StopCriteria, next_tokens
from gpt_lightning.model import GPT
from gpt_lightning.serve.batch import DecodeBatch

log = logging.getLogger(__name__)
OnEvent = Callable[[str, object], None]


class QueueFull(Exception):
    """More sequences are waiting than the queue holds."""


class Closed(Exception):
    """The scheduler is shutting down and takes no new sequences."""


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen (as ``generate``'s arguments of the same names)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0


@dataclass(eq=False)
class Sequence:
    """One completion to generate."""

    prompt: list[int]
    budget: int  # new tokens allowed (max_tokens, cut to what fits the context)
    sampling: Sampling
    stops: StopCriteria
    generator: torch.Generator | None  # None when greedy
    on_event: OnEvent
    new: list[int] = field(default_factory=list)
    seen: torch.Tensor | None = None  # (V,) bool, with a repetition penalty
    cancelled: bool = False  # set by any thread: the sequence leaves at the next step
    finish_reason: str | None = None


class Scheduler:
    """Owns ``model`` on a thread of its own; ``max_batch_size`` rows decode together."""

    def __init__(self, model: GPT, *, max_batch_size: int, queue_size: int) -> None:
        self.model = model.eval()
        self.max_batch_size = max_batch_size
        self.queue_size = queue_size
        self.batch = DecodeBatch(model, max_batch_size)
        self.rows: list[Sequence] = []  # row i of the batch
        self.waiting: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._stopped = False
        self._num_threads = torch.get_num_threads()  # the creator's setting, for the new thread too
        self._thread = threading.Thread(target=self._loop, name="gpt-lightning-scheduler", daemon=True)

    # ---- other threads -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue ``sequences`` together, or raise QueueFull / Closed and queue none."""
        with self._cond:
            if self._closed:
                raise Closed()
            if len(self.waiting) + len(sequences) > self.queue_size:
                raise QueueFull()
            self.waiting.extend(sequences)
            self._cond.notify()

    def close(self) -> None:
        """Take no new sequences; queued and running ones go on."""
        with self._cond:
            self._closed = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop after its current step; sequences still there are cancelled."""
        with self._cond:
            self._closed = self._stopped = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            left = self.rows + list(self.waiting)
            self.rows, self.waiting = [], deque()
        for seq in left:
            if seq.finish_reason is None:
                self._finish(seq, "cancelled")

    def counts(self) -> dict:
        with self._cond:
            return {"running": len(self.rows), "waiting": len(self.waiting)}

    # ---- the scheduler thread ------------------------------------------------------
    def _loop(self) -> None:
        torch.set_num_threads(self._num_threads)
        while True:
            with self._cond:
                while not self._stopped and not self.waiting and not self.rows:
                    self._cond.wait()
                if self._stopped:
                    return
                room = self.max_batch_size - len(self.rows)
                admitted = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
            try:
                with torch.inference_mode():
                    for seq in admitted:
                        if seq.cancelled:
                            self._finish(seq, "cancelled")
                    joining = [seq for seq in admitted if not seq.cancelled]
                    if joining:
                        self._prefill(joining)
                    self._leave_finished()
                    if self.rows:
                        self._step()
                        self._leave_finished()
            except Exception as err:  # noqa: BLE001 - fail these requests, keep serving the next
                log.exception("generation failed")
                failed = self.rows + [s for s in admitted if s.finish_reason is None and s not in self.rows]
                with self._cond:
                    self.rows = []
                self.batch = DecodeBatch(self.model, self.max_batch_size)
                for seq in failed:
                    if seq.finish_reason is None:
                        seq.finish_reason = "error"
                        seq.on_event("error", f"{type(err).__name__}: {err}")

    def _prefill(self, seqs: list[Sequence]) -> None:
        """Prefill ``seqs`` together (one padded forward) and choose their first tokens."""
        logits = self.batch.prefill_many([seq.prompt for seq in seqs])  # (n, V)
        with self._cond:
            self.rows.extend(seqs)
        for seq in seqs:
            if seq.sampling.repetition_penalty != 1.0:
                seq.seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
                seq.seen[seq.prompt] = True
        for seq, token in zip(seqs, self._choose(seqs, logits)):
            self._advance(seq, token)

    def _step(self) -> None:
        tokens = torch.tensor([seq.new[-1] for seq in self.rows])
        logits = self.batch.step(tokens)  # (B, V)
        for seq, token in zip(self.rows, self._choose(self.rows, logits)):
            self._advance(seq, token)

    def _choose(self, rows: list[Sequence], logits: torch.Tensor) -> list[int]:
        """The next token of every row; rows with the same settings are processed together."""
        groups: dict[Sampling, list[int]] = {}
        for i, seq in enumerate(rows):
            groups.setdefault(seq.sampling, []).append(i)
        tokens = [0] * len(rows)
        for sampling, index in groups.items():
            sub = logits if len(index) == len(rows) else logits[index]
            seen = torch.stack([rows[i].seen for i in index]) if sampling.repetition_penalty != 1.0 else None
            chosen = next_tokens(sub, seen, [rows[i].generator for i in index], asdict(sampling))
            for i, token in zip(index, chosen.tolist()):
                tokens[i] = token
        return tokens

    def _advance(self, seq: Sequence, token: int) -> None:
        seq.new.append(token)
        if seq.seen is not None:
            seq.seen[token] = True
        seq.on_event("token", token)
        if seq.stops.hit(seq.new):
            self._finish(seq, "stop")
        elif len(seq.new) >= seq.budget:
            self._finish(seq, "length")

    def _leave_finished(self) -> None:
        keep = [i for i, seq in enumerate(self.rows) if seq.finish_reason is None and not seq.cancelled]
        if len(keep) == len(self.rows):
            return
        for seq in self.rows:
            if seq.finish_reason is None and seq.cancelled:
                self._finish(seq, "cancelled")
        self.batch.keep(keep)
        with self._cond:
            self.rows = [self.rows[i] for i in keep]

    @staticmethod
    def _finish(seq: Sequence, reason: str) -> None:
        seq.finish_reason = reason
        seq.on_event("done", reason)
