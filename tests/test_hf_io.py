import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt_lightning.weights.hf_io import load_pretrained, save_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig


def _batches(vocab, n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (2, L), generator=g) for L in (1, 17, 48)[:n]]


def test_transformers_checkpoint_loads_with_same_logits(hf_tiny_folder):
    folder, hf = hf_tiny_folder
    ours = load_pretrained(folder).eval()
    assert ours.config.n_layers == 2 and ours.config.context_length == 48
    with torch.no_grad():
        for idx in _batches(97):
            diff = (ours(idx) - hf(idx).logits).abs().max().item()
            assert diff <= 1e-4, diff


def test_loads_single_file_with_or_without_prefix_and_mask_buffers(hf_tiny_folder, tmp_path):
    folder, hf = hf_tiny_folder
    state = load_file(str(folder / "model.safetensors"))
    # the released OpenAI files: no "transformer." prefix, old attn.bias buffers present
    bare = {k.removeprefix("transformer."): v for k, v in state.items()}
    for i in range(2):
        bare[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 48, 48))
        bare[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    path = tmp_path / "released.safetensors"
    save_file(bare, str(path))
    cfg = load_pretrained(folder).config
    ours = load_pretrained(path, config=cfg).eval()
    idx = _batches(97)[1]
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-4


def test_our_export_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=97, context_length=48, n_embd=32, n_layers=2, n_heads=4)).eval()
    # non-zero biases so a transposition or mapping mistake cannot hide
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    folder = save_pretrained(ours, tmp_path / "export")
    assert json.loads((folder / "config.json").read_text())["n_layer"] == 2
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        for idx in _batches(97):
            assert (ours(idx) - hf(idx).logits).abs().max().item() <= 1e-4
    # and back into ours: identical weights
    again = load_pretrained(folder)
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_mismatch_is_one_error_listing_everything(hf_tiny_folder, tmp_path):
    folder, _ = hf_tiny_folder
    state = load_file(str(folder / "model.safetensors"))
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.0.ln_1.weight"] = torch.ones(31)
    state["transformer.extra.weight"] = torch.ones(3)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    cfg = load_pretrained(folder).config
    with pytest.raises(ConfigError) as err:
        load_pretrained(path, config=cfg)
    msg = str(err.value)
    assert "missing 1" in msg and "h.1.mlp.c_fc.bias" in msg
    assert "unexpected 1" in msg and "extra.weight" in msg
    assert "mis-shaped 1" in msg and "h.0.ln_1.weight" in msg


def test_wrong_config_shape_is_reported(hf_tiny_folder):
    folder, _ = hf_tiny_folder
    with pytest.raises(ConfigError, match="mis-shaped"):
        load_pretrained(folder / "model.safetensors",
                            config=GPTConfig(vocab_size=97, context_length=48, n_embd=64, n_layers=2, n_heads=4))


def test_missing_path_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrained(tmp_path / "nope")



# ---- variants transformers' GPT-2 has no switch for: round trip through both -------------
FLAGS = [dict(qkv_bias=q, bias=b, tie_embeddings=t) for q in (True, False) for b in (True, False)
         for t in (True, False)]


def _variant(flags, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=97, context_length=48, n_embd=32, n_layers=2, n_heads=4, **flags)).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm weights, so no mapping mistake can hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                p.normal_(0, 0.05).add_(1.0 if name.endswith("weight") else 0.0)
    return model


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(f"{k}={int(v)}" for k, v in f.items()))
def test_every_bias_and_tie_variant_round_trips_through_ours_and_transformers(flags, tmp_path):
    transformers = pytest.importorskip("transformers")
    from gpt_lightning.weights.sources import build_model

    ours = _variant(flags)
    folder = save_pretrained(ours, tmp_path / "export")
    stored = json.loads((folder / "config.json").read_text())
    assert stored["tie_word_embeddings"] is flags["tie_embeddings"]
    assert (stored["qkv_bias"], stored["bias"]) == (flags["qkv_bias"], flags["bias"])
    names = set(load_file(str(folder / "model.safetensors")))
    assert ("lm_head.weight" in names) is (not flags["tie_embeddings"])
    # what generate.py init=checkpoint init.path=<export> does, and the Python API
    for again in (build_model({"name": "checkpoint", "path": str(folder)}, GPTConfig().to_dict()),
                  load_pretrained(folder)):
        assert {k: getattr(again.config, k) for k in flags} == flags
        assert again.state_dict().keys() == ours.state_dict().keys()
        for k, v in ours.state_dict().items():
            assert torch.equal(again.state_dict()[k], v), k
        assert (again.lm_head.weight is again.wte.weight) is flags["tie_embeddings"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) is flags["tie_embeddings"]
    with torch.no_grad():
        for idx in _batches(97):
            diff = (ours(idx) - hf(idx).logits).abs().max().item()
            assert diff <= 1e-4, diff


def test_bias_free_export_without_flags_in_config_json_infers_them(tmp_path):
    """An older export (no zero biases, no qkv_bias/bias in config.json) still loads."""
    flags = dict(qkv_bias=False, bias=False, tie_embeddings=True)
    ours = _variant(flags)
    folder = save_pretrained(ours, tmp_path / "old")
    state = load_file(str(folder / "model.safetensors"))
    kept = {k: v for k, v in state.items() if not k.endswith("bias") or ".ln_" in k or "ln_f" in k}
    kept = {k: v for k, v in kept.items() if not k.endswith(".ln_1.bias") and not k.endswith(".ln_2.bias")
            and not k.endswith("ln_f.bias")}
    save_file(kept, str(folder / "model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["qkv_bias"], cfg["bias"]
    (folder / "config.json").write_text(json.dumps(cfg))
    again = load_pretrained(folder)
    assert (again.config.qkv_bias, again.config.bias) == (False, False)
    idx = _batches(97)[1]
    with torch.no_grad():
        assert torch.allclose(again(idx), ours(idx), rtol=1e-5, atol=1e-5)


def test_non_zero_bias_for_a_bias_free_config_is_refused(tmp_path):
    folder = save_pretrained(_variant(dict(qkv_bias=False, bias=True, tie_embeddings=True)), tmp_path / "e")
    state = load_file(str(folder / "model.safetensors"))
    state["transformer.h.1.attn.c_attn.bias"] = torch.full_like(state["transformer.h.1.attn.c_attn.bias"], 0.1)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"non-zero 1 .*h\.1\.attn\.c_attn\.bias"):
        load_pretrained(folder)


def test_untied_export_without_lm_head_is_refused(tmp_path):
    folder = save_pretrained(_variant(dict(qkv_bias=True, bias=True, tie_embeddings=False)), tmp_path / "e")
    state = load_file(str(folder / "model.safetensors"))
    del state["lm_head.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"missing 1: \['lm_head.weight"):
        load_pretrained(folder)


def test_untied_lightning_checkpoint_loads_its_own_head(tmp_path):
    from gpt_lightning.weights.sources import build_model

    ours = _variant(dict(qkv_bias=False, bias=True, tie_embeddings=False))
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ours.state_dict().items()},
                "hyper_parameters": {"model_config": ours.config.to_dict()}}, path)
    again = build_model({"name": "checkpoint", "path": str(path)}, GPTConfig().to_dict())
    assert again.lm_head.weight is not again.wte.weight
    assert torch.equal(again.lm_head.weight, ours.lm_head.weight)
