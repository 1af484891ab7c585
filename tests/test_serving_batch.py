"""The continuous-batching core without HTTP: a decode batch whose rows join and leave
matches recomputing each sequence from scratch, and the scheduler gives every sequence the
tokens of ``generate`` for its prompt alone, with rows joining mid-flight."""

import random
import threading
import warnings

import pytest
import torch

from helpers import wide_gpt
from gpt_lightning import GPT
from gpt_lightning.generate.sampling import StopCriteria, generate, make_generators
from gpt_lightning.serve.batch import DecodeBatch
from gpt_lightning.serve.scheduler import QueueFull, Sampling, Scheduler, Sequence

VOCAB = 97


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


def wide_model(context_length: int = 48) -> GPT:
    return wide_gpt(VOCAB, context_length)


def test_rows_joining_and_leaving_match_full_recomputation():
    """Every step's logits equal the full forward of each row's tokens, through jumps of
    ``pos`` (a longer prompt joins), rows leaving, and compaction of a full cache."""
    model, rng = wide_model(), random.Random(1)
    batch = DecodeBatch(model, max_rows=4)
    rows: list[list[int]] = []  # tokens of each row (last one not yet fed)
    jumps = compactions = 0
    with torch.inference_mode():
        for step in range(120):
            if len(rows) < 4 and rng.random() < 0.35:
                prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 30))]
                before = batch.pos if len(batch) else 0
                logits = batch.prefill(prompt)
                jumps += len(batch) > 1 and batch.pos > before
                full = model(torch.tensor([prompt]))[0, -1]
                torch.testing.assert_close(logits, full, rtol=1e-4, atol=1e-4)
                rows.append(prompt + [int(logits.argmax())])
            if not rows:
                continue
            keep = [i for i, r in enumerate(rows) if len(r) < model.config.context_length and rng.random() > 0.05]
            batch.keep(keep)
            rows = [rows[i] for i in keep]
            if not rows:
                continue
            pos_before = batch.pos
            logits = batch.step(torch.tensor([r[-1] for r in rows]))
            compactions += batch.pos < pos_before + 1
            for r, row_logits in zip(rows, logits):
                full = model(torch.tensor([r]))[0, -1]
                torch.testing.assert_close(row_logits, full, rtol=1e-4, atol=1e-4)
                r.append(int(row_logits.argmax()))
    assert jumps > 0 and compactions > 0  # both paths ran


@pytest.fixture(scope="module")
def model():
    return wide_model(context_length=64)


def solo(model, prompt, max_tokens, sampling: Sampling, seed, stop_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # budget cut by the context: the same cut on both sides
        return generate(model, [prompt], max_new_tokens=max_tokens, seed=seed, eos_id=0,
                        stop_sequences=stop_ids, **sampling.__dict__)[0]


def test_scheduler_tokens_equal_solo_generation_with_rows_joining_mid_flight(model):
    rng = random.Random(2)
    settings = [Sampling(0.0), Sampling(0.9, 20), Sampling(1.0, 0, 0.8, 1.3), Sampling(0.0, 0, 1.0, 1.5)]
    jobs = [([rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 40))], rng.randint(1, 40),
             settings[i % 4], 100 + i, [[5, 6]] if i % 5 == 0 else []) for i in range(20)]
    scheduler = Scheduler(model, max_batch_size=6, queue_size=32)
    tokens = {i: [] for i in range(len(jobs))}
    reasons, finished = {}, threading.Semaphore(0)

    def sequence(i, prompt, max_tokens, sampling, seed, stop_ids):
        def on_event(kind, value):
            if kind == "token":
                tokens[i].append(value)
            else:
                reasons[i] = value
                finished.release()
        generator = make_generators(seed, 1)[0] if sampling.temperature > 0 else None
        return Sequence(prompt, min(max_tokens, 64 - len(prompt)), sampling, StopCriteria(0, stop_ids),
                        generator, on_event)

    scheduler.start()
    try:
        for i, job in enumerate(jobs):
            scheduler.submit([sequence(i, *job)])
            threading.Event().wait(rng.random() * 0.01)  # arrive while others decode
        for _ in jobs:
            assert finished.acquire(timeout=60)
    finally:
        scheduler.stop()
    for i, job in enumerate(jobs):
        assert tokens[i] == solo(model, *job), f"sequence {i}"
        assert reasons[i] == ("length" if len(tokens[i]) == min(job[1], 64 - len(job[0])) and
                              tokens[i][-1] != 0 and tokens[i][-2:] != [5, 6] else "stop")


def test_queue_is_bounded_and_a_cancelled_sequence_leaves(model):
    scheduler = Scheduler(model, max_batch_size=1, queue_size=1)
    gate, started, events = threading.Event(), threading.Event(), []

    def blocking(kind, value):  # a slow consumer: holds the scheduler thread at the first token
        events.append((kind, value))
        started.set()
        gate.wait(30)

    first = Sequence([1, 2, 3], 50, Sampling(0.0), StopCriteria(None), None, blocking)
    second = Sequence([4], 50, Sampling(0.0), StopCriteria(None), None, lambda k, v: events.append((k, v)))
    scheduler.start()
    try:
        scheduler.submit([first])
        assert started.wait(30)
        scheduler.submit([second])  # waits: the batch holds one row
        with pytest.raises(QueueFull):
            scheduler.submit([Sequence([5], 5, Sampling(0.0), StopCriteria(None), None, lambda k, v: None)])
        first.cancelled = second.cancelled = True
        gate.set()
        for _ in range(600):
            if scheduler.counts() == {"running": 0, "waiting": 0}:
                break
            threading.Event().wait(0.05)
        assert scheduler.counts() == {"running": 0, "waiting": 0}
    finally:
        gate.set()
        scheduler.stop()
    assert len(first.new) < 50 and first.finish_reason == second.finish_reason == "cancelled"
    assert second.new == []

def test_prompts_joining_together_are_prefilled_in_one_forward_as_one_at_a_time(model):
    """prefill_many (left-padded, one forward) gives each prompt the logits of its solo
    prefill, and the rows then decode as rows prefilled one at a time do."""
    rng = random.Random(3)
    prompts = [[rng.randrange(VOCAB) for _ in range(n)] for n in (7, 1, 19, 12)]
    together, alone = DecodeBatch(model, max_rows=6), DecodeBatch(model, max_rows=6)
    calls = []
    hook = model.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    with torch.inference_mode():
        first = [rng.randrange(VOCAB) for _ in range(5)]
        together.prefill(first)  # a row already decoding when the others join
        alone.prefill(first)
        del calls[:]
        got = together.prefill_many(prompts)
        assert calls == [len(prompts)]  # one forward for all four
        hook.remove()
        want = torch.stack([alone.prefill(p) for p in prompts])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        tokens = torch.tensor([1] + [int(t) for t in want.argmax(-1)])
        for _ in range(6):
            a, b = together.step(tokens), alone.step(tokens)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            tokens = b.argmax(-1)


def test_scheduler_with_sequences_arriving_together_equals_solo_generation(model):
    rng = random.Random(4)
    jobs = [([rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 30))], 12, Sampling(0.9 if i % 2 else 0.0, 20),
             200 + i, []) for i in range(8)]
    scheduler = Scheduler(model, max_batch_size=8, queue_size=16)
    tokens = {i: [] for i in range(len(jobs))}
    finished = threading.Semaphore(0)

    def sequence(i, prompt, max_tokens, sampling, seed, stop_ids):
        def on_event(kind, value):
            tokens[i].append(value) if kind == "token" else finished.release()
        generator = make_generators(seed, 1)[0] if sampling.temperature > 0 else None
        return Sequence(prompt, max_tokens, sampling, StopCriteria(0, stop_ids), generator, on_event)

    scheduler.submit([sequence(i, *job) for i, job in enumerate(jobs)])  # queued before the loop starts: one turn
    scheduler.start()
    try:
        for _ in jobs:
            assert finished.acquire(timeout=60)
    finally:
        scheduler.stop()
    for i, job in enumerate(jobs):
        assert tokens[i] == solo(model, *job), f"sequence {i}"
