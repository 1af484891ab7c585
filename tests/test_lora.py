"""LoRA: starts as the base model, trains only adapters, merges into plain GPT-2 weights."""

import pytest
import torch

from helpers import run_job
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning import GPT, ConfigError, GPTConfig
from gpt_lightning.weights.sources import build_model
from gpt_lightning.lora import LoRALinear, apply_lora, merge_lora_state


def test_lora_starts_as_the_base_and_trains_only_adapters(tiny_config):
    torch.manual_seed(0)
    base = GPT(tiny_config).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 12))
    before = base(idx)
    model = apply_lora(base, rank=4, alpha=8)
    assert torch.equal(model(idx), before)  # B starts at zero
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    c, r = tiny_config.n_embd, 4
    per_block = r * (c + 3 * c) + r * (c + c) + r * (c + 4 * c) + r * (4 * c + c)  # qkv, proj, fc, mlp.proj
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == per_block * tiny_config.n_layers


def test_merged_state_gives_the_same_logits(tiny_config):
    torch.manual_seed(0)
    model = apply_lora(GPT(tiny_config), rank=2, alpha=4).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.1)
    idx = torch.randint(0, tiny_config.vocab_size, (2, 12))
    merged = GPT(tiny_config).eval()
    merged.load_state_dict(merge_lora_state(model.state_dict()))
    assert (merged(idx) - model(idx)).abs().max() < 1e-5


def test_bad_rank_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="finetune.lora.rank"):
        apply_lora(GPT(tiny_config), rank=-1)


def test_finetune_with_lora_exports_merged_weights(tmp_path):
    out = tmp_path / "run"
    run_job("finetune", out, [
        "init=scratch", "model=gpt2_tiny", "debug=smoke", "finetune.lora.rank=4", "optim.lr=1e-2",
        "trainer.enable_progress_bar=false", "logger=none", "callbacks.samples.enabled=false"])
    exported = load_pretrained(out / "export").eval()
    from_ckpt = build_model({"name": "checkpoint", "path": str(out / "checkpoints" / "last.ckpt")}, {})
    for (name, a), b in zip(exported.state_dict().items(), from_ckpt.state_dict().values()):
        assert torch.equal(a, b), name
    # the scratch weights before fine-tuning, from the run's seed
    initial = build_model({"name": "scratch", "path": None}, GPTConfig.from_name("gpt2_tiny"), seed=123)
    assert torch.equal(exported.wte.weight, initial.wte.weight)  # frozen
    assert not torch.equal(exported.blocks[0].attn.qkv.weight, initial.blocks[0].attn.qkv.weight)  # merged update

    # the same complete Hugging Face folder as train.py's, its card stating the recipe and the data
    import hashlib

    from helpers import data_dir
    from gpt_lightning.weights.export import main as export_cli

    folder = out / "export"
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "rank 4, alpha 16" in card and "merged into these weights" in card and "instruction-tuned" in card
    records = (data_dir() / "instruction-data.json").read_bytes()
    assert hashlib.sha256(b"tiktoken-gpt2" + records + b"\0file\0").hexdigest()[:24] in card
    assert "935 / 110 / 55" in card  # the records of each split
    again = export_cli([str(out / "checkpoints" / "last.ckpt"), str(tmp_path / "again")])  # merges too
    assert all(torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                  load_pretrained(again).state_dict().values()))
