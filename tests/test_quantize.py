"""int8 weights: the Linear against its formula, whole models against fp32, the streaming
safetensors loader against in-memory quantization, and generate.py's quantize / draft keys."""

import copy

import pytest
import torch
from helpers import compose_config, run_script
from gpt_lightning.cli.hydra_adapter import plain

from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.generate import job as generate_app
from gpt_lightning.generate.sampling import generate
from gpt_lightning.quantize import Int8Linear, check_quantize, load_quantized, quantize_model, quantize_weight


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second OpenMP thread costs more than it gives


def test_int8_linear_follows_its_formula():
    torch.manual_seed(0)
    w, b, x = torch.randn(48, 40), torch.randn(48), torch.randn(2, 3, 40)
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.allclose(scale, w.abs().amax(1) / 127)
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()  # rounding to nearest
    rows = x.reshape(-1, 40)
    x_scale = rows.abs().amax(1, keepdim=True) / 127
    expected = (torch.round(rows / x_scale) * x_scale) @ (q.float() * scale[:, None]).t() + b  # dequantized maths
    got = Int8Linear(q, scale, b)(x)
    assert got.shape == (2, 3, 48)
    torch.testing.assert_close(got.reshape(-1, 48), expected, rtol=1e-5, atol=1e-4)
    # and it approximates the float Linear to within the int8 rounding
    assert (got - torch.nn.functional.linear(x, w, b)).abs().max() < 0.05 * (x.abs().max() * w.abs().sum(1).max() / 40)


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=2, n_heads=4)).eval()


def test_quantized_model_is_close_to_fp32_and_unties_the_head():
    model = tiny()
    q = quantize_model(copy.deepcopy(model))
    assert all(not isinstance(m, torch.nn.Linear) for m in q.modules())
    assert torch.equal(q.wte.weight, model.wte.weight)  # the lookup stays exact
    x = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model(x), q(x)
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()
    assert (got - ref).abs().max() > 0  # it really is another computation
    # KV-cache decoding works on the quantized model like on any other
    out = generate(q, x[:, :5].tolist(), max_new_tokens=6, temperature=0.0)
    assert all(len(o) == 6 for o in out)


@pytest.mark.parametrize("flags", [dict(qkv_bias=False, bias=False, tie_embeddings=True),
                                   dict(qkv_bias=True, bias=True, tie_embeddings=False)], ids=["no-bias", "untied"])
def test_streaming_loader_handles_bias_free_and_untied_exports(tmp_path, flags):
    """The export of such a model stores zero biases / lm_head.weight; int8 keeps what it has."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=2, n_heads=4, **flags)).eval()
    folder = save_pretrained(model, tmp_path / "export")
    loaded = load_quantized(folder, model.config)
    expected = quantize_model(copy.deepcopy(model))
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))  # the same quantization, done two ways
        ref = model(x)
        assert (loaded(x) - ref).abs().max() < 0.02 * ref.abs().max()


def test_streaming_loader_equals_quantizing_in_memory(tmp_path, hf_tiny_folder):
    model = tiny()
    folder = save_pretrained(model, tmp_path / "export")
    loaded = load_quantized(folder, model.config)
    expected = quantize_model(copy.deepcopy(model))
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))
    assert all(t.device.type == "cpu" for t in list(loaded.parameters()) + list(loaded.buffers()))
    # a transformers folder ("transformer."-less names, lm_head.weight) loads too, close to its fp32 logits
    hf_folder, hf = hf_tiny_folder
    from gpt_lightning.weights.hf_io import read_config

    q = load_quantized(hf_folder, read_config(hf_folder))
    with torch.no_grad():
        ref = hf(x).logits
        assert (q(x) - ref).abs().max() < 0.02 * ref.abs().max()


def test_streaming_loader_names_every_problem_before_loading(tmp_path):
    folder = save_pretrained(tiny(), tmp_path / "export")
    wrong = GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=3, n_heads=4)
    with pytest.raises(ConfigError, match=r"missing h\.2\.ln_1\.weight"):
        load_quantized(folder, wrong)


def test_check_quantize_values():
    check_quantize(None, torch.device("cuda"), torch.bfloat16)
    check_quantize("int8", torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="quantize='int4' is invalid"):
        check_quantize("int4", torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="int8 runs on CPUs"):
        check_quantize("int8", torch.device("cuda"), torch.float32)
    with pytest.raises(ConfigError, match="dtype=bfloat16"):
        check_quantize("int8", torch.device("cpu"), torch.bfloat16)


# ---- generate.py ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A 1-layer GPT with the GPT-2 vocabulary, written as our export folder."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, context_length=128, n_embd=16, n_layers=1, n_heads=2)).eval()
    return save_pretrained(model, tmp_path_factory.mktemp("tiny_export")), model


def test_cli_int8_with_a_draft_streams_the_int8_greedy_text(tmp_path, export, tokenizer):
    """quantize=int8 + draft.init: speculative greedy equals the quantized target's own greedy text."""
    result = run_script("generate.py", ["init=checkpoint", f"init.path={export[0]}", "quantize=int8",
                                        "draft.init=checkpoint", f"draft.path={export[0]}", "draft.k=3",
                                        "prompt=Hello there", "temperature=0", "max_new_tokens=8"],
                        cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    q = quantize_model(copy.deepcopy(export[1]))
    out = generate(q, [tokenizer.encode("Hello there")], max_new_tokens=8, temperature=0.0, eos_id=tokenizer.eot_id)[0]
    assert result.stdout == "Hello there" + tokenizer.decode([t for t in out if t != tokenizer.eot_id]) + "\n"


@pytest.mark.parametrize("overrides, message", [
    (["quantize=int4"], "quantize='int4' is invalid"),
    (["quantize=int8", "dtype=bfloat16"], "quantize='int8' is invalid: int8 keeps activations in float32"),
    (["draft.init=checkpoint", "draft.path=SELF", "draft.k=0"], "draft.k=0 is invalid"),
    (["draft.init=checkpoint", "draft.path=SELF", "num_beams=2", "temperature=0"], "num_beams=2 is invalid"),
    (["draft.init=scratch"], "draft.init='scratch' is invalid"),
    (["draft.path=SELF"], "draft.path=.* is invalid: it needs draft.init=checkpoint"),
    (["draft.init=checkpoint", "draft.path=OTHER"], "its vocab_size=50300 differs from the target's 50257"),
    (["draft.init=int8", "quantize=int8"], "draft.init='int8' is invalid: the target is int8 already"),
    (["draft.init=int8", "draft.path=SELF"], "draft.path=.* is invalid: draft.init=int8 drafts with the target's own"),
    (["draft.init=int8", "dtype=bfloat16"], "draft.init='int8' is invalid: the int8 draft verifies with a float32"),
])
def test_cli_bad_quantize_and_draft_values_fail_before_loading(tmp_path, export, overrides, message, monkeypatch):
    other = GPT(GPTConfig(vocab_size=50300, context_length=128, n_embd=16, n_layers=1, n_heads=2))
    paths = {"SELF": str(export[0]), "OTHER": str(save_pretrained(other, tmp_path / "other"))}
    overrides = [o.replace("SELF", paths["SELF"]).replace("OTHER", paths["OTHER"]) for o in overrides]
    cfg = plain(compose_config("generate", ["init=checkpoint", f"init.path={export[0]}", "device=cpu", *overrides]))
    monkeypatch.setattr(generate_app, "load_model", lambda *a, **k: pytest.fail("loaded weights before checking"))
    with pytest.raises(ConfigError, match=message):
        generate_app.run(cfg)


# ---- self-speculative decoding: the int8 copy drafts, the fp32 model verifies ------------------
def test_int8_draft_gives_the_fp32_greedy_tokens_and_leaves_the_target_fp32():
    from helpers import wide_gpt
    from gpt_lightning.generate.speculative import SpeculativeStats, speculative_generate
    from gpt_lightning.quantize import int8_draft, is_quantized

    target = wide_gpt(97, 64)
    before = {n: p.clone() for n, p in target.named_parameters()}
    draft = int8_draft(target)
    assert is_quantized(draft) and not is_quantized(target)
    assert draft.wte.weight is target.wte.weight  # shared, not copied
    assert all(type(b.mlp.fc) is torch.nn.Linear for b in target.blocks)
    prompts = [[5, 17, 42, 8, 3], [1], [60, 61, 62, 63, 64, 65, 66, 67], [7, 7, 60]]
    expected = [generate(target, [p], max_new_tokens=24, temperature=0.0)[0] for p in prompts]
    for k in (2, 4):
        stats = SpeculativeStats()
        assert speculative_generate(target, draft, prompts, k=k, max_new_tokens=24, temperature=0.0,
                                    stats=stats) == expected
        assert 0 < stats.accepted < stats.proposed  # int8 agrees often, not always: both paths ran
    for n, p in target.named_parameters():
        assert torch.equal(p, before[n]), n


def test_cli_draft_int8_prints_the_fp32_greedy_text(export, tokenizer, capsys):
    cfg = plain(compose_config("generate", ["init=checkpoint", f"init.path={export[0]}", "device=cpu",
                                            "draft.init=int8", "draft.k=3", "prompt=Hello there", "temperature=0",
                                            "max_new_tokens=10"]))
    generate_app.run(cfg)
    out = generate(export[1], [tokenizer.encode("Hello there")], max_new_tokens=10, temperature=0.0,
                   eos_id=tokenizer.eot_id)[0]
    assert capsys.readouterr().out == "Hello there" + tokenizer.decode([t for t in out if t != tokenizer.eot_id]) + "\n"


def test_evaluate_and_serve_accept_quantize_int8(export, tmp_path):
    from gpt_lightning.evaluate import job as evaluate_app
    from gpt_lightning.serve.job import check_config

    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 12)
    ppl = {}
    for q in ("null", "int8"):
        cfg = plain(compose_config("evaluate", ["init=checkpoint", f"init.path={export[0]}", "task=perplexity",
                                                f"text.path={text}", "progress=false", "device=cpu", f"quantize={q}"]))
        summary = evaluate_app.run(cfg, tmp_path / q)
        ppl[q] = {r["metric"]: r["value"] for r in summary}["perplexity"]
    assert ppl["int8"] != ppl["null"] and ppl["int8"] == pytest.approx(ppl["null"], rel=0.02)
    base = ["init=checkpoint", f"init.path={export[0]}"]
    assert check_config(plain(compose_config("serve", [*base, "quantize=int8"]))).quantize == "int8"
    with pytest.raises(ConfigError, match=r"^quantize='int4' is invalid"):
        check_config(plain(compose_config("serve", [*base, "quantize=int4"])))
