"""Generation: KV-cache decoding against naive recomputation, sampling statistics, batching,
stopping, beam search, streaming, and transformers' generate as a peer. CPU, tiny models."""

import math
import warnings

import pytest
import torch

from gpt_lightning.weights.hf_io import load_pretrained, save_pretrained
from helpers import wide_gpt
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.generate.sampling import (StopCriteria, StreamDecoder, apply_repetition_penalty, beam_search, filter_top_k, filter_top_p, generate, process_logits, sample, to_inference_layout, trim_at_stop)

VOCAB = 97
PROMPTS = [[5, 17, 42, 8, 3], [1], [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71], [7, 7, 60]]


def tiny_model(seed: int = 0, context_length: int = 64) -> GPT:
    return wide_gpt(VOCAB, context_length, seed)


def fixed_logits_model(logits: torch.Tensor) -> GPT:
    """A real GPT whose every output position has exactly ``logits``: the final LayerNorm
    outputs its bias e_0 whatever comes in, and the tied head reads column 0 of wte."""
    model = GPT(GPTConfig(vocab_size=len(logits), context_length=64, n_embd=16, n_layers=1, n_heads=2)).eval()
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1.0
        model.wte.weight[:, 0] = logits
    return model


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def greedy(model, prompt, n):
    return generate(model, [prompt], max_new_tokens=n, temperature=0.0)[0]


def naive_greedy(model, prompt, n):
    """Recompute the whole sequence for every token: no cache, no padding."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def sequence_logprob(model, prompt, new):
    """Sum of log p(new token | everything before it), from one full forward pass."""
    seq = torch.tensor([prompt + new])
    with torch.no_grad():
        logp = model(seq)[0].log_softmax(-1)  # (T, V)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(new))


# ---- greedy and the cache ----------------------------------------------------------------
def test_greedy_with_kv_cache_equals_naive_recomputation(model):
    for prompt in PROMPTS:
        assert greedy(model, prompt, 30) == naive_greedy(model, prompt, 30)


def test_last_only_logits_equal_the_last_position(model):
    """Same values up to rounding: the head multiplies 3 rows instead of 33, and BLAS may
    round a product of another shape differently (see tests/README.md)."""
    idx = torch.randint(0, VOCAB, (3, 11))
    with torch.no_grad():
        last, full = model(idx, last_only=True), model(idx)
    assert last.shape == (3, 1, VOCAB)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(last, full[:, -2:-1], rtol=1e-3, atol=1e-3)  # the last position, not another


def test_model_mode_is_restored_and_cache_removed():
    model = tiny_model().train()
    generate(model, [[1, 2]], max_new_tokens=3, temperature=0.0)
    assert model.training and all(b.attn.cache is None for b in model.blocks)


def test_inference_layout_changes_memory_order_only(tmp_path):
    model = tiny_model(seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    idx = torch.randint(0, VOCAB, (2, 20))
    with torch.no_grad():
        logits = model(idx)
    expected = generate(model, PROMPTS, max_new_tokens=20, temperature=0.0)
    to_inference_layout(model)
    assert model.blocks[0].mlp.fc.weight.stride() == (1, 128) and model.lm_head.weight is model.wte.weight
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert (model(idx) - logits).abs().max().item() < 1e-5
    assert generate(model, PROMPTS, max_new_tokens=20, temperature=0.0) == expected
    again = load_pretrained(save_pretrained(model, tmp_path / "export"))
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())


# ---- sampling ----------------------------------------------------------------------------
def test_top_k_1_and_tiny_top_p_equal_greedy(model):
    for prompt in PROMPTS[:2]:
        expected = greedy(model, prompt, 25)
        assert generate(model, [prompt], max_new_tokens=25, temperature=1.0, top_k=1, seed=3)[0] == expected
        assert generate(model, [prompt], max_new_tokens=25, temperature=1.3, top_p=1e-6, seed=4)[0] == expected


def test_same_seed_repeats_and_another_seed_differs(model):
    run = lambda seed: generate(model, PROMPTS, max_new_tokens=25, temperature=1.0, top_k=40, top_p=0.95, seed=seed)
    assert run(7) == run(7)
    assert run(7) != run(8)
    torch.manual_seed(1)
    first = generate(model, PROMPTS, max_new_tokens=10, temperature=1.0)  # seed=None: torch's global RNG
    torch.manual_seed(1)
    assert generate(model, PROMPTS, max_new_tokens=10, temperature=1.0) == first


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])


def filtered_distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The target distribution written out plainly: softmax, keep the top k, keep the
    smallest most-likely set reaching top_p, renormalise."""
    probs = (logits / temperature).softmax(-1).tolist()
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep = ranked[:top_k] if top_k else ranked
    kept_mass = sum(probs[i] for i in keep)
    nucleus, mass = [], 0.0
    for i in keep:
        if mass >= top_p * kept_mass:
            break
        nucleus.append(i)
        mass += probs[i]
    return [probs[i] / mass if i in nucleus else 0.0 for i in range(len(probs))]


@pytest.mark.parametrize("settings", [
    dict(temperature=1.0),
    dict(temperature=1.0, top_k=3),
    dict(temperature=1.0, top_p=0.7),
    dict(temperature=0.7, top_k=5, top_p=0.9),
    dict(temperature=2.0, top_k=6),
])
def test_sampled_frequencies_follow_the_filtered_distribution(settings):
    n = 40_000
    logits = LOGITS.expand(n, -1)
    processed = process_logits(logits, None, **settings)
    uniforms = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(sample(processed, uniforms), minlength=len(LOGITS)).tolist()
    expected = filtered_distribution(LOGITS, **settings)
    for token, (count, p) in enumerate(zip(counts, expected)):
        if p == 0.0:
            assert count == 0, f"filtered-out token {token} was sampled {count} times"
        else:
            # binomial standard deviation; 5 sigma: a false alarm has probability < 1e-6
            sigma = math.sqrt(p * (1 - p) / n)
            assert abs(count / n - p) <= 5 * sigma, (token, count / n, p)


def test_generate_samples_the_filtered_distribution_end_to_end():
    """The whole path (model, per-row generators, filters) on a model with fixed logits."""
    model = fixed_logits_model(LOGITS)
    rows, steps = 500, 20  # 10,000 draws: each row draws 20 times from its own generator
    outs = generate(model, [[0]] * rows, max_new_tokens=steps, temperature=1.0, top_k=4, top_p=0.9, seed=11)
    counts = torch.bincount(torch.tensor(outs).flatten(), minlength=len(LOGITS)).tolist()
    n = rows * steps
    for count, p in zip(counts, filtered_distribution(LOGITS, top_k=4, top_p=0.9)):
        if p == 0.0:
            assert count == 0
        else:
            assert abs(count / n - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_top_k_and_top_p_filters_directly():
    row = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert torch.isinf(filter_top_k(row, 2)).tolist() == [[False, True, False, True]]
    probs = row.softmax(-1)[0].tolist()  # ~ [0.64, 0.09, 0.24, 0.03]
    assert torch.isinf(filter_top_p(row, probs[0] + 1e-3)).tolist() == [[False, True, False, True]]
    assert torch.isinf(filter_top_p(row, probs[0] - 1e-3)).tolist() == [[False, True, True, True]]
    assert torch.equal(filter_top_p(row, 1.0), row) and torch.equal(filter_top_k(row, 0), row)


def test_repetition_penalty_follows_the_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0]])
    seen = torch.tensor([[True, True, False, False, False]])
    out = apply_repetition_penalty(logits, seen, 1.5)
    assert torch.allclose(out, torch.tensor([[2.0 / 1.5, -1.0 * 1.5, 0.5, -3.0, 1.0]]))
    # the repeated token's probability drops exactly as softmax of the penalised logits says
    p = out.softmax(-1)[0, 0].item()
    others = math.exp(-1.5) + math.exp(0.5) + math.exp(-3.0) + math.exp(1.0)
    assert p == pytest.approx(math.exp(2.0 / 1.5) / (math.exp(2.0 / 1.5) + others), rel=1e-6)
    assert p < logits.softmax(-1)[0, 0].item()


def test_repetition_penalty_counts_the_prompt():
    model = fixed_logits_model(LOGITS)  # argmax is token 0, then token 1
    assert generate(model, [[3]], max_new_tokens=1, temperature=0.0)[0] == [0]
    # token 0 is in the prompt: 2.0 / 1.5 = 1.33 < 1.5, so token 1 wins
    assert generate(model, [[0]], max_new_tokens=1, temperature=0.0, repetition_penalty=1.5)[0] == [1]
    # generated tokens count too, once each (not cumulative): with 1.5, 0 (2.0), 1 (1.5 > 1.33),
    # then 0 again (1.33 > 1.0); with 3, 0 falls to 0.67 and 1 to 0.5, so 2 (1.0) comes third
    assert generate(model, [[3]], max_new_tokens=3, temperature=0.0, repetition_penalty=1.5)[0] == [0, 1, 0]
    assert generate(model, [[3]], max_new_tokens=3, temperature=0.0, repetition_penalty=3.0)[0] == [0, 1, 2]


# ---- batches -----------------------------------------------------------------------------
def test_batched_prompts_of_different_lengths_equal_one_by_one(model):
    batched = generate(model, PROMPTS, max_new_tokens=30, temperature=0.0)
    assert batched == [greedy(model, p, 30) for p in PROMPTS]
    # rows finishing early leave the batch: the others must not notice
    eos = batched[0][6]
    with_eos = generate(model, PROMPTS, max_new_tokens=30, temperature=0.0, eos_id=eos, repetition_penalty=1.2)
    alone = [generate(model, [p], max_new_tokens=30, temperature=0.0, eos_id=eos, repetition_penalty=1.2)[0]
             for p in PROMPTS]
    assert with_eos == alone and any(len(r) < 30 for r in alone)


def test_batched_sampling_equals_one_by_one_with_the_row_seed(model):
    batched = generate(model, PROMPTS, max_new_tokens=20, temperature=0.9, top_k=50, seed=100)
    alone = [generate(model, [p], max_new_tokens=20, temperature=0.9, top_k=50, seed=100 + i)[0]
             for i, p in enumerate(PROMPTS)]
    assert batched == alone


def test_padding_does_not_cut_short_rows_at_the_context_limit(model):
    long, short = list(range(50)), [3, 4]  # padded to 50, the short row would only get 14 slots
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = generate(model, [long, short], max_new_tokens=30, temperature=0.0)
    assert len(batched[0]) == 64 - 50
    assert batched[1] == greedy(model, short, 30)


def test_long_prompt_keeps_its_last_tokens_with_a_warning(model):
    prompt = [i % VOCAB for i in range(80)]
    with pytest.warns(UserWarning) as caught:
        out = generate(model, [prompt], max_new_tokens=5, temperature=0.0)
    assert "keeping its last 63" in str(caught[0].message) and "leaves room for 1 of" in str(caught[1].message)
    assert out[0] == naive_greedy(model, prompt[-63:], 1)
    with pytest.warns(UserWarning, match="leaves room for 4 of max_new_tokens=10"):
        out = generate(model, [prompt[:60]], max_new_tokens=10, temperature=0.0)
    assert out[0] == naive_greedy(model, prompt[:60], 4)


def test_on_token_streams_every_token_of_every_row(model):
    seen: dict[int, list[int]] = {}
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=1.0, seed=0,
                   on_token=lambda row, tok: seen.setdefault(row, []).append(tok))
    assert [seen[i] for i in range(len(PROMPTS))] == out


# ---- stopping ----------------------------------------------------------------------------
def test_stops_at_eos_and_at_stop_sequences(model):
    free = greedy(model, PROMPTS[0], 30)
    eos = free[8]
    assert generate(model, [PROMPTS[0]], max_new_tokens=30, temperature=0.0, eos_id=eos)[0] == \
        free[:free.index(eos) + 1]
    stop = free[10:12]
    first = next(i for i in range(len(free)) if free[i:i + 2] == stop)
    assert generate(model, [PROMPTS[0]], max_new_tokens=30, temperature=0.0, stop_sequences=[stop])[0] == \
        free[:first + 2]


def test_stops_at_stop_strings(model):
    letters = lambda ids: "".join(chr(ord("a") + t % 26) for t in ids)  # a toy detokenizer
    free = greedy(model, PROMPTS[1], 30)
    text = letters(free)
    stop = text[12:15]
    out = generate(model, [PROMPTS[1]], max_new_tokens=30, temperature=0.0, stop_sequences=[stop], decode=letters)[0]
    assert out == free[:text.index(stop) + len(stop)]
    assert trim_at_stop(letters(out), [stop]) == text[:text.index(stop)]


def test_stop_strings_need_a_decoder():
    with pytest.raises(ConfigError, match="stop"):
        StopCriteria(stop_sequences=["\n"])


# ---- beam search -------------------------------------------------------------------------
def test_beam_search_with_one_beam_is_greedy(model):
    for prompt in PROMPTS:
        assert beam_search(model, prompt, num_beams=1, max_new_tokens=20) == greedy(model, prompt, 20)
    eos = greedy(model, PROMPTS[0], 20)[5]
    assert beam_search(model, PROMPTS[0], num_beams=1, max_new_tokens=20, eos_id=eos) == \
        generate(model, [PROMPTS[0]], max_new_tokens=20, temperature=0.0, eos_id=eos)[0]


def test_beam_search_with_beams_covering_the_vocabulary_is_exact(model):
    """With num_beams >= V and two new tokens nothing is pruned: beam search must return
    the most likely pair of all V * V, found here by brute force."""
    for prompt in PROMPTS[:2]:
        firsts = torch.arange(VOCAB).unsqueeze(1)  # (V, 1)
        seqs = torch.cat([torch.tensor([prompt]).expand(VOCAB, -1), firsts], dim=1)  # (V, P + 1)
        with torch.no_grad():
            logp = model(seqs).log_softmax(-1)  # (V, P + 1, V)
        pair = logp[:, -2, firsts.squeeze(1)].diagonal().unsqueeze(1) + logp[:, -1]  # (V, V)
        best = divmod(int(pair.argmax()), VOCAB)
        assert beam_search(model, prompt, num_beams=VOCAB, max_new_tokens=2) == list(best)


def test_beam_search_usually_beats_greedy(model):
    """Not a theorem (a pruned greedy prefix can end better: here 2 beams lose to greedy on
    two prompts, exactly as in transformers), but 8 beams beat it on all of these."""
    for prompt in PROMPTS:
        ref = greedy(model, prompt, 15)
        beam = beam_search(model, prompt, num_beams=8, max_new_tokens=15)
        assert len(beam) == 15
        assert sequence_logprob(model, prompt, beam) >= sequence_logprob(model, prompt, ref) - 1e-5


def test_beam_search_ends_at_eos(model):
    out = beam_search(model, PROMPTS[0], num_beams=3, max_new_tokens=20)
    eos = out[4]
    ended = beam_search(model, PROMPTS[0], num_beams=3, max_new_tokens=20, eos_id=eos)
    assert ended[-1] == eos and eos not in ended[:-1] and len(ended) <= 20


# ---- streaming text ----------------------------------------------------------------------


def test_stream_decoder_emits_only_complete_characters(tokenizer):
    text = "Grüße 世界 🙂🚀 naïve"
    ids = tokenizer.encode(text)
    split = [i for i, t in enumerate(ids) if b"\xef\xbf\xbd" in tokenizer.decode(ids[i:i + 1]).encode()]
    assert split, "the text should contain tokens that end inside a character"
    stream = StreamDecoder(tokenizer.decode_bytes)
    pieces = [stream.push(t) for t in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stream_decoder_holds_back_a_possible_stop_string_and_skips_eos(tokenizer):
    text = "Answer: yes.\n### End and more"
    ids = tokenizer.encode(text) + [tokenizer.eot_id]
    stream = StreamDecoder(tokenizer.decode_bytes, skip_ids={tokenizer.eot_id}, stop_strings=["\n###"])
    pieces = [stream.push(t) for t in ids] + [stream.finish()]
    assert "".join(pieces) == "Answer: yes."
    assert stream.stopped
    plain = StreamDecoder(tokenizer.decode_bytes, skip_ids={tokenizer.eot_id})
    assert "".join([plain.push(t) for t in ids] + [plain.finish()]) == text


# ---- bad values --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [
    (dict(temperature=-0.1), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=3, temperature=0.8), "num_beams"),
    (dict(seed=[1, 2]), "seed"),
    (dict(prompts=[[1, 200]]), "prompts[0]"),
    (dict(prompts=[[]]), "prompts[0]"),
])
def test_bad_values_name_the_key(model, kwargs, key):
    args = dict(prompts=[[1, 2]], max_new_tokens=5, temperature=1.0)
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        generate(model, args.pop("prompts"), **args)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


# ---- transformers as a peer --------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random transformers GPT-2 (no eos configured) and the same weights in our GPT."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=VOCAB,
                                  initializer_range=0.3, bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    folder = tmp_path_factory.mktemp("hf_gen")
    hf.save_pretrained(folder)
    return load_pretrained(folder).eval(), hf


def hf_generate(hf, prompt, **kwargs):
    ids = torch.tensor([prompt])
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kwargs)[0, len(prompt):].tolist()
    eos = kwargs.get("eos_token_id")
    return out[:out.index(eos) + 1] if eos in out else out  # drop the padding after eos


def test_greedy_equals_transformers(hf_pair):
    ours, hf = hf_pair
    for prompt in PROMPTS:
        assert greedy(ours, prompt, 30) == hf_generate(hf, prompt, max_new_tokens=30)


def test_left_padded_batch_equals_transformers(hf_pair):
    ours, hf = hf_pair
    L = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in PROMPTS])
    theirs = hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=20, pad_token_id=0)
    assert generate(ours, PROMPTS, max_new_tokens=20, temperature=0.0) == theirs[:, L:].tolist()


@pytest.mark.parametrize("num_beams, length_penalty, eos, penalty", [
    (3, 1.0, None, 1.0),  # no eos: every beam runs to max_new_tokens
    (3, 1.0, 95, 1.0),
    (4, 0.5, 54, 1.0),
    (2, 2.0, 95, 1.0),
    (3, 1.0, None, 1.3),  # transformers penalises the log-probs in beam search, not the logits
    (4, 0.5, 54, 2.0),
    (2, 1.0, None, 0.7),  # < 1 favours repeats
])
def test_beam_search_equals_transformers(hf_pair, num_beams, length_penalty, eos, penalty):
    """transformers' beam search (early_stopping=False): finished hypotheses scored
    sum_logprobs / new_len ** length_penalty, stopping once none can improve."""
    ours, hf = hf_pair
    for prompt in PROMPTS:
        theirs = hf_generate(hf, prompt, max_new_tokens=25, num_beams=num_beams, length_penalty=length_penalty,
                             eos_token_id=eos, pad_token_id=eos, repetition_penalty=penalty)
        assert beam_search(ours, prompt, num_beams=num_beams, max_new_tokens=25, length_penalty=length_penalty,
                           eos_id=eos, repetition_penalty=penalty) == theirs
