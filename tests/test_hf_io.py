import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt_lightning.hf_io import load_pretrained, save_pretrained
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
