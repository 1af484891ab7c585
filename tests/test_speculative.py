"""Speculative decoding: greedy output equals the target's own, sampled tokens follow the
target's distribution (rejection rule checked in isolation and end to end). CPU, tiny models."""

import math

import pytest
import torch

from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.generate.sampling import generate, process_logits
from gpt_lightning.generate.speculative import (SpeculativeStats, _accept, residual_sample, speculative_generate)

PROMPTS = [[5, 17, 42, 8, 3], [1], [60, 61, 62, 63, 64, 65, 66, 67], [7, 7, 60]]


def tiny(seed: int, vocab: int = 97, n_embd: int = 32, n_layers: int = 2, std: float = 0.3) -> GPT:
    """A random GPT with wide weights, so its greedy text varies instead of repeating."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, context_length=64, n_embd=n_embd, n_layers=n_layers, n_heads=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


@pytest.fixture(scope="module")
def target():
    return tiny(0)


def near_copy(model: GPT, noise: float, seed: int) -> GPT:
    """The target with noisy weights: a draft that agrees often but not always."""
    draft = tiny(0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, q in zip(draft.parameters(), model.parameters()):
            p.copy_(q + noise * torch.randn(q.shape, generator=g))
    return draft


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_equals_the_targets_own_greedy_output(target, k):
    draft = near_copy(target, 0.15, seed=k)
    stats = SpeculativeStats()
    expected = [generate(target, [p], max_new_tokens=20, temperature=0.0)[0] for p in PROMPTS]
    got = speculative_generate(target, draft, PROMPTS, k=k, max_new_tokens=20, temperature=0.0, stats=stats)
    assert got == expected
    # the draft was partly right and partly wrong, so both the accept and the roll-back paths ran
    assert 0 < stats.accepted < stats.proposed
    if k > 1:  # accepted proposals save target forwards
        assert stats.target_forwards < stats.new_tokens


def test_greedy_with_an_unrelated_draft_and_repetition_penalty_still_equals_the_target(target):
    draft = tiny(7, n_embd=16, n_layers=1)  # another architecture, same vocabulary
    kwargs = dict(max_new_tokens=15, temperature=0.0, repetition_penalty=1.3)
    expected = [generate(target, [p], **kwargs)[0] for p in PROMPTS]
    assert speculative_generate(target, draft, PROMPTS, k=4, **kwargs) == expected


def test_a_perfect_draft_is_always_accepted(target):
    stats = SpeculativeStats()
    out = speculative_generate(target, target, [PROMPTS[0]], k=4, max_new_tokens=21, temperature=0.0, stats=stats)
    assert out == generate(target, [PROMPTS[0]], max_new_tokens=21, temperature=0.0)
    assert stats.accepted == stats.proposed and stats.target_forwards == 5  # 4 rounds of 4 + 1, then 1


def test_stops_budget_and_streaming(target):
    draft = near_copy(target, 0.15, seed=1)
    free = generate(target, [PROMPTS[0]], max_new_tokens=12, temperature=0.0)[0]
    eos = free[5]
    streamed = []
    out = speculative_generate(target, draft, [PROMPTS[0]], k=4, max_new_tokens=12, temperature=0.0, eos_id=eos,
                               on_token=lambda row, t: streamed.append((row, t)))[0]
    assert out == free[:free.index(eos) + 1]  # ends at eos even when it sits mid-round
    assert streamed == [(0, t) for t in out]
    out = speculative_generate(target, draft, [PROMPTS[0]], k=4, max_new_tokens=7, temperature=0.0)[0]
    assert out == free[:7]


def test_bad_settings_name_the_key(target):
    with pytest.raises(ConfigError, match="draft.k=0 is invalid"):
        speculative_generate(target, target, [[1]], k=0)
    with pytest.raises(ConfigError, match="draft.vocab_size=50 is invalid"):
        speculative_generate(target, tiny(1, vocab=50), [[1]], k=2)


def _five_sigma(counts: torch.Tensor, probs: torch.Tensor, n: int) -> None:
    for cell, (count, p) in enumerate(zip(counts.tolist(), probs.tolist())):
        if p == 0.0:
            assert count == 0, cell
        else:
            # binomial standard deviation; 5 sigma: a false alarm has probability < 1e-6 per cell
            assert abs(count / n - p) <= 5 * math.sqrt(p * (1 - p) / n), (cell, count / n, p)


def test_rejection_rule_gives_the_target_distribution():
    """_accept on fixed distributions: the first token it emits must follow p, whatever q is."""
    g = torch.Generator().manual_seed(0)
    V, n = 6, 8_000
    p_logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]])
    q = torch.tensor([0.05, 0.05, 0.4, 0.3, 0.1, 0.1], dtype=torch.float64)  # far from p
    p = torch.softmax(p_logits[0], -1, dtype=torch.float64)
    uniform = lambda: torch.rand(1, generator=g, dtype=torch.float64)  # noqa: E731
    firsts = []
    for _ in range(n):
        proposal = int(torch.multinomial(q, 1, generator=g))
        firsts.append(_accept(p_logits, [q], [proposal], False, uniform)[0])
    counts = torch.bincount(torch.tensor(firsts), minlength=V)
    _five_sigma(counts, p, n)
    assert (q - p).abs().max() > 0.2  # accepting every proposal (q) would fail the test above


def test_residual_is_max_of_p_minus_q_renormalised():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    q = torch.tensor([0.2, 0.4, 0.1, 0.3], dtype=torch.float64)  # residual (0.3, 0, 0.1, 0) / 0.4
    g = torch.Generator().manual_seed(3)
    n = 4000
    draws = [residual_sample(p, q, torch.rand(1, generator=g, dtype=torch.float64)) for _ in range(n)]
    _five_sigma(torch.bincount(torch.tensor(draws), minlength=4), torch.tensor([0.75, 0.0, 0.25, 0.0]), n)


def test_sampled_tokens_follow_the_target_end_to_end():
    """Joint frequencies of the first two sampled tokens against the target's exact
    probabilities (filters applied), with a draft whose distribution is very different."""
    V = 5
    target, draft = tiny(0, vocab=V, n_embd=16, n_layers=1, std=0.5), tiny(5, vocab=V, n_embd=16, n_layers=1, std=0.5)
    prompt, settings = [1, 4, 2], dict(temperature=0.9, top_k=4, repetition_penalty=1.2)

    def probs(model, seq):  # the processed next-token distribution after seq
        with torch.inference_mode():
            seen = torch.zeros(1, V, dtype=torch.bool)
            seen[0, seq] = True
            return torch.softmax(process_logits(model(torch.tensor([seq]))[:, -1], seen, **settings)[0], -1,
                                 dtype=torch.float64)

    first = probs(target, prompt)
    joint = torch.stack([first[a] * probs(target, prompt + [a]) for a in range(V)]).flatten()  # (V * V,)
    draft_first = probs(draft, prompt)
    assert (draft_first - first).abs().max() > 0.1  # the draft alone would be caught

    n = 800
    outs = speculative_generate(target, draft, [prompt] * n, k=2, max_new_tokens=2, seed=0, **settings)
    counts = torch.bincount(torch.tensor([a * V + b for a, b in outs]), minlength=V * V)
    _five_sigma(counts, joint, n)


def test_generate_yaml_draft_k_default_is_the_library_default():
    import inspect
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "generate.yaml")
    assert cfg.draft.k == inspect.signature(speculative_generate).parameters["k"].default
    assert cfg.draft.init is None and cfg.quantize is None  # both off unless asked for
