import pytest
import torch

from gpt_lightning import GPT, SIZES, ConfigError, GPTConfig

REFERENCE_COUNTS = {  # transformers' GPT2LMHeadModel, head tied to the token embedding
    "gpt2_small": 124_439_808,
    "gpt2_medium": 354_823_168,
    "gpt2_large": 774_030_080,
    "gpt2_xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_parameter_counts_match_reference(name):
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name(name))
    assert model.num_params() == REFERENCE_COUNTS[name]


def test_parameter_counts_match_transformers_meta():
    transformers = pytest.importorskip("transformers")
    cfg = GPTConfig.from_name("gpt2_medium")
    hf_cfg = transformers.GPT2Config(n_layer=cfg.n_layers, n_head=cfg.n_heads, n_embd=cfg.n_embd)
    with torch.device("meta"):
        ours = GPT(cfg).num_params()
        theirs = sum(p.numel() for p in transformers.GPT2LMHeadModel(hf_cfg).parameters())
    assert ours == theirs


def test_logits_shape_and_tied_head(tiny_config):
    model = GPT(tiny_config)
    idx = torch.randint(0, tiny_config.vocab_size, (3, 10))
    assert model(idx).shape == (3, 10, tiny_config.vocab_size)
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


def test_gpt2_initialisation_scales_residual_projections():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=500, context_length=64, n_embd=256, n_layers=8, n_heads=4)
    model = GPT(cfg)
    proj = model.blocks[0].attn.proj.weight.std().item()
    qkv = model.blocks[0].attn.qkv.weight.std().item()
    assert abs(qkv - 0.02) < 0.002
    assert abs(proj - 0.02 / (2 * cfg.n_layers) ** 0.5) < 0.001
    assert torch.all(model.blocks[0].attn.qkv.bias == 0)


def test_causality(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 20))
    base = model(idx)
    for t in (0, 7, 19):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % tiny_config.vocab_size
        out = model(changed)
        assert torch.equal(out[:, :t], base[:, :t]), f"positions before {t} changed"
        assert not torch.allclose(out[:, t], base[:, t]), "the changed position itself must change"


def test_kv_cache_incremental_equals_full(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 24))
    full = model(idx)
    model.setup_kv_cache(batch_size=2, max_length=24)
    pieces = [model(idx[:, :10], input_pos=0)]  # a prompt, then one token at a time
    for t in range(10, 24):
        pieces.append(model(idx[:, t:t + 1], input_pos=t))
    inc = torch.cat(pieces, dim=1)
    assert (inc - full).abs().max().item() < 1e-5
    # chunks of several tokens after the prompt also match (mask offset by the cache)
    model.setup_kv_cache(batch_size=2, max_length=24)
    chunked = torch.cat([model(idx[:, :5], input_pos=0), model(idx[:, 5:17], input_pos=5),
                         model(idx[:, 17:], input_pos=17)], dim=1)
    assert (chunked - full).abs().max().item() < 1e-5


def test_kv_cache_is_preallocated(tiny_config):
    model = GPT(tiny_config).eval()
    model.setup_kv_cache(batch_size=1, max_length=16)
    cache = model.blocks[0].attn.cache
    ptr = cache.k.data_ptr()
    idx = torch.randint(0, tiny_config.vocab_size, (1, 16))
    model(idx[:, :4], input_pos=0)
    for t in range(4, 16):
        model(idx[:, t:t + 1], input_pos=t)
    assert cache.k.data_ptr() == ptr and cache.k.shape[2] == 16


def test_left_padding_with_mask_matches_unpadded(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config).eval()
    seq = torch.randint(0, tiny_config.vocab_size, (1, 9))
    alone = model(seq)
    pad = 4
    padded = torch.cat([torch.zeros(1, pad, dtype=torch.long), seq], dim=1)
    mask = torch.cat([torch.zeros(1, pad), torch.ones(1, 9)], dim=1)
    pos = (mask.cumsum(1) - 1).clamp(min=0).long()
    out = model(padded, attention_mask=mask, position_ids=pos)
    assert torch.isfinite(out).all()
    assert (out[:, pad:] - alone).abs().max().item() < 1e-5


@pytest.mark.parametrize("kwargs, key", [
    (dict(n_embd=30, n_heads=4), "model.n_heads"),
    (dict(n_layers=0), "model.n_layers"),
    (dict(dropout=1.5), "model.dropout"),
])
def test_impossible_configs_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        GPTConfig(**kwargs)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_too_long_sequence_is_a_clear_error(tiny_config):
    model = GPT(tiny_config)
    with pytest.raises(ConfigError, match="context_length=32"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_named_sizes_exist():
    assert {"gpt2_small", "gpt2_medium", "gpt2_large", "gpt2_xl", "gpt2_tiny"} <= set(SIZES)
    with pytest.raises(ConfigError, match="one of"):
        GPTConfig.from_name("gpt5")


def test_untied_head_is_its_own_matrix_and_counts(tiny_config):
    from dataclasses import replace

    tied, untied = GPT(tiny_config), GPT(replace(tiny_config, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() == tied.num_params() + tiny_config.vocab_size * tiny_config.n_embd
    # "LLMs from scratch" ch. 4 prints 163,009,536 for its GPT_CONFIG_124M (no qkv bias, untied)
    with torch.device("meta"):
        book = GPT(GPTConfig.from_name("gpt2_small", qkv_bias=False, tie_embeddings=False))
    assert book.num_params() == 163_009_536


def test_pytorch_initialisation_keeps_module_defaults():
    """init_scheme=pytorch: Embedding N(0, 1), Linear Kaiming-uniform (+-1/sqrt(fan_in)), no scaling."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=500, context_length=64, n_embd=256, n_layers=8, n_heads=4,
                    tie_embeddings=False, init_scheme="pytorch")
    model = GPT(cfg)
    assert abs(model.wte.weight.std().item() - 1.0) < 0.02 and abs(model.wpe.weight.std().item() - 1.0) < 0.02
    for name in ("blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.3.mlp.fc", "blocks.3.mlp.proj", "lm_head"):
        linear = model.get_submodule(name)
        bound = 1 / linear.in_features ** 0.5  # kaiming_uniform_(a=sqrt(5)) as nn.Linear.reset_parameters
        w = linear.weight
        assert w.abs().max().item() <= bound and abs(w.std().item() - bound / 3 ** 0.5) < 0.05 * bound, name
        if linear.bias is not None:
            assert linear.bias.abs().max().item() <= bound and linear.bias.abs().max().item() > 0.5 * bound
    assert torch.equal(model.blocks[0].ln_1.weight, torch.ones(256))
    assert torch.equal(model.blocks[0].ln_1.bias, torch.zeros(256))


@pytest.mark.parametrize("kwargs, key", [(dict(init_scheme="xavier"), "model.init_scheme"),
                                         (dict(tie_embeddings="no"), "model.tie_embeddings"),
                                         (dict(qkv_bias=1), "model.qkv_bias")])
def test_bad_model_flags_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}=.* is invalid: "):
        GPTConfig(vocab_size=97, context_length=32, n_embd=32, n_layers=2, n_heads=4, **kwargs)
