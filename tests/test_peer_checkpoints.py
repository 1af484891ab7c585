"""init=checkpoint on the files of nanoGPT, llm.c and "LLMs from scratch".

Each test builds a small GPT-2 in transformers (the peer: wide random weights, so a wrong
GELU form, a transposed matrix or a swapped q/k/v shows far above the tolerance), writes its
weights in the other project's layout as that project defines it (the mapping is written here,
independently of gpt_lightning/weights/peers.py), loads the file with ``build_model`` and
compares logits with transformers' within 1e-4.

Layouts, from the projects' sources:
- nanoGPT model.py / train.py: ``torch.save({"model": state_dict, "model_args": {...}, ...})``;
  nn.Linear (out, in) weights; lm_head tied to transformer.wte; ``nn.GELU()`` (exact);
  without flash attention, each block holds a causal-mask buffer ``attn.bias``.
- llm.c train_gpt2.py write_model: 256 int32 header, then the parameters in llm.c's order,
  each stacked over layers, wte padded to Vp rows; version 3 float32, 5 bfloat16.
- LLMs-from-scratch ch04 GPTModel: tok_emb, pos_emb, trf_blocks.N.att.W_query/W_key/W_value,
  out_proj, ff.layers.0/2, norm1/norm2/final_norm scale/shift, out_head; ``att.mask`` buffer.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt_lightning import ConfigError
from gpt_lightning.weights.sources import build_model, planned_config

pytestmark = pytest.mark.usefixtures("one_thread")

V, T, C, L, H = 97, 24, 32, 2, 4  # vocabulary, context, width, layers, heads
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def reference(activation="gelu_new", tied=True, qkv_bias=True, bias=True, vocab=V, seed=0) -> GPT2LMHeadModel:
    """A transformers GPT-2 with wide random weights; a missing bias is a zero one."""
    config = GPT2Config(vocab_size=vocab, n_positions=T, n_embd=C, n_layer=L, n_head=H,
                        activation_function=activation, tie_word_embeddings=tied,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0, 0.3)
            if (name.endswith("c_attn.bias") and not qkv_bias) or (
                    not bias and name.endswith(".bias") and "c_attn" not in name):
                p.zero_()
    return model


def hf_weights(model: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """transformer.* tensors, Conv1D weights turned into nn.Linear's (out, in)."""
    return {k: (v.t() if k.endswith(CONV1D) else v).detach().clone().contiguous()
            for k, v in model.state_dict().items()
            if k.startswith("transformer.") and not k.endswith((".attn.bias", ".attn.masked_bias"))}  # mask buffers


def ids(vocab=V):
    return torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(1))


def assert_same_logits(ours, hf, vocab=V):
    with torch.no_grad():
        diff = (ours.eval()(ids(vocab)) - hf(ids(vocab)).logits).abs().max().item()
    assert diff <= 1e-4, diff


def load(path, **model):
    return build_model({"name": "checkpoint", "path": str(path)}, model, explicit=set(model))


# ---- nanoGPT --------------------------------------------------------------------------------
def write_nanogpt(hf: GPT2LMHeadModel, path, bias=True, prefix=""):
    state = hf_weights(hf)
    if not bias:
        state = {k: v for k, v in state.items() if not k.endswith(".bias")}
    mask = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    state.update({f"transformer.h.{i}.attn.bias": mask for i in range(L)})  # no-flash buffers
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one tensor, two names
    args = dict(n_layer=L, n_head=H, n_embd=C, block_size=T, bias=bias, vocab_size=V, dropout=0.0)
    torch.save({"model": {prefix + k: v for k, v in state.items()}, "model_args": args,
                "optimizer": {"state": {}, "param_groups": []}, "iter_num": 250,
                "best_val_loss": torch.tensor(1.5), "config": {"dataset": "shakespeare_char", **args}}, path)


@pytest.mark.parametrize("bias, prefix", [(True, ""), (True, "_orig_mod."), (False, "")])
def test_nanogpt_ckpt(tmp_path, bias, prefix):
    hf = reference(activation="gelu", bias=bias, qkv_bias=bias)  # nanoGPT's nn.GELU() is the exact form
    write_nanogpt(hf, tmp_path / "ckpt.pt", bias=bias, prefix=prefix)
    model = load(tmp_path / "ckpt.pt", dropout=0.1)
    assert_same_logits(model, hf)
    cfg = model.config
    assert (cfg.gelu, cfg.bias, cfg.qkv_bias, cfg.tie_embeddings, cfg.dropout) == ("exact", bias, bias, True, 0.1)
    assert (cfg.vocab_size, cfg.context_length, cfg.n_embd, cfg.n_layers, cfg.n_heads) == (V, T, C, L, H)
    assert model.lm_head.weight is model.wte.weight


# ---- llm.c ------------------------------------------------------------------------------------
def write_llmc(hf: GPT2LMHeadModel, path, version=3, padded=128):
    """llm.c's write_model: header, then each tensor stacked over the layers, wte padded to Vp."""
    w = hf_weights(hf)
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [20240326, version, T, V, L, H, C, padded]
    wte = torch.cat([w["transformer.wte.weight"], torch.full((padded - V, C), 7.0)])  # padding: never scored
    per_layer = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"]
    tensors = [wte, w["transformer.wpe.weight"],
               *(torch.stack([w[f"transformer.h.{i}.{name}"] for i in range(L)]) for name in per_layer),
               w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]]
    with open(path, "wb") as fh:
        fh.write(header.tobytes())
        for t in tensors:
            t = t.contiguous()
            fh.write((t.to(torch.bfloat16).view(torch.int16) if version == 5 else t.float()).numpy().tobytes())


def test_llmc_fp32_bin(tmp_path):
    hf = reference()
    write_llmc(hf, tmp_path / "gpt2_124M.bin")
    model = load(tmp_path / "gpt2_124M.bin")
    assert_same_logits(model, hf)
    cfg = model.config
    assert (cfg.vocab_size, cfg.context_length, cfg.n_heads, cfg.gelu, cfg.tie_embeddings) == (V, T, H, "tanh", True)


def test_llmc_bf16_bin(tmp_path):
    hf = reference()
    with torch.no_grad():  # the peer holds what a bf16 file can: every weight rounded to bfloat16
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    write_llmc(hf, tmp_path / "model_00005000.bin", version=5)
    assert_same_logits(load(tmp_path / "model_00005000.bin"), hf)


# ---- LLMs from scratch ------------------------------------------------------------------------
def scratch_state(hf: GPT2LMHeadModel, qkv_bias: bool) -> dict[str, torch.Tensor]:
    """GPTModel.state_dict() of the book for the same weights (its Linear layers are (out, in))."""
    w = {k.removeprefix("transformer."): v for k, v in hf_weights(hf).items()}
    out = {"tok_emb.weight": w["wte.weight"], "pos_emb.weight": w["wpe.weight"]}
    for i in range(L):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        for j, name in enumerate(("W_query", "W_key", "W_value")):
            out[b + f"att.{name}.weight"] = w[h + "attn.c_attn.weight"][j * C:(j + 1) * C]
            if qkv_bias:
                out[b + f"att.{name}.bias"] = w[h + "attn.c_attn.bias"][j * C:(j + 1) * C]
        out[b + "att.mask"] = torch.triu(torch.ones(T, T), diagonal=1)
        for theirs, hf_name in (("att.out_proj", "attn.c_proj"), ("ff.layers.0", "mlp.c_fc"), ("ff.layers.2", "mlp.c_proj")):
            out[b + f"{theirs}.weight"], out[b + f"{theirs}.bias"] = w[h + f"{hf_name}.weight"], w[h + f"{hf_name}.bias"]
        for norm, ln in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[b + f"{norm}.scale"], out[b + f"{norm}.shift"] = w[h + f"{ln}.weight"], w[h + f"{ln}.bias"]
    out["final_norm.scale"], out["final_norm.shift"] = w["ln_f.weight"], w["ln_f.bias"]
    out["out_head.weight"] = hf.lm_head.weight.detach().clone()
    return {k: v.clone() for k, v in out.items()}


@pytest.mark.parametrize("qkv_bias, wrapped", [(False, False), (True, True)])
def test_llms_from_scratch_pth(tmp_path, qkv_bias, wrapped, caplog):
    hf = reference(tied=False, qkv_bias=qkv_bias)
    state = scratch_state(hf, qkv_bias)
    saved = {"model_state_dict": state, "optimizer_state_dict": {}} if wrapped else state  # ch05's two forms
    torch.save(saved, tmp_path / "model.pth")
    with caplog.at_level(logging.INFO, logger="gpt_lightning"):  # not stored in the file: the model config's
        model = build_model({"name": "checkpoint", "path": str(tmp_path / "model.pth")}, {"n_heads": H})
    assert_same_logits(model, hf)
    assert (model.config.qkv_bias, model.config.tie_embeddings, model.config.n_heads) == (qkv_bias, False, H)
    assert "do not store the number of heads; using n_heads=4 (model.n_heads of the model config)" in caplog.text


def test_llms_from_scratch_heads_of_a_gpt2_size(tmp_path):
    """A 768-wide, 12-block file is GPT-2 small's shape: 12 heads, whatever the model group says.
    Expanded tensors keep the file tiny; only the architecture is read."""
    one = torch.zeros(1)
    state = {"tok_emb.weight": one.expand(50257, 768), "pos_emb.weight": one.expand(1024, 768),
             "out_head.weight": one.expand(50257, 768)}
    state.update({f"trf_blocks.{i}.att.out_proj.bias": one.expand(768) for i in range(12)})
    torch.save(state, tmp_path / "gpt2-small-124M.pth")
    init = {"name": "checkpoint", "path": str(tmp_path / "gpt2-small-124M.pth")}
    mini = {"n_layers": 4, "n_heads": 4, "n_embd": 256, "context_length": 256}
    assert planned_config(init, mini).n_heads == 12
    assert planned_config(init, {**mini, "n_heads": 6}, explicit={"n_heads"}).n_heads == 6
    with pytest.raises(ConfigError, match=r"model.n_heads=5 is invalid: a divisor of n_embd=768: .* does not store"):
        planned_config(init, {**mini, "n_heads": 5}, explicit={"n_heads"})


# ---- through the commands -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def nanogpt_from_scratch(tmp_path_factory):
    """A nanoGPT ckpt.pt over GPT-2's vocabulary padded to 50304 rows, as nanoGPT trains from scratch."""
    path = tmp_path_factory.mktemp("nanogpt") / "ckpt.pt"
    hf = reference(activation="gelu", vocab=50304)
    write_nanogpt(hf, path)
    return path, hf


def test_nanogpt_padded_vocabulary_is_trimmed(nanogpt_from_scratch):
    path, hf = nanogpt_from_scratch
    model = load(path)
    assert model.config.vocab_size == 50257  # the 47 padding rows belong to no token
    with torch.no_grad():
        diff = (model.eval()(ids(50257)) - hf(ids(50257)).logits[..., :50257]).abs().max().item()
    assert diff <= 1e-4, diff


def test_train_and_generate_start_from_a_peer_file(tmp_path, nanogpt_from_scratch, tokenizer, capsys):
    from gpt_lightning.cli.hydra_adapter import plain
    from gpt_lightning.generate import job as generate_job
    from gpt_lightning.generate.sampling import generate as generate_tokens
    from helpers import compose_config, run_job

    path, _ = nanogpt_from_scratch
    result = run_job("train", tmp_path / "run", [
        "debug=smoke", "init=checkpoint", f"init.path={path}", f"data.max_length={T}", "trainer.max_steps=2",
        "logger=none", "callbacks.samples.enabled=false", "trainer.enable_progress_bar=false", "export=false"])
    assert result["global_step"] == 2
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert {k: ckpt["hyper_parameters"]["model_config"][k] for k in ("gelu", "vocab_size", "n_heads")} == {
        "gelu": "exact", "vocab_size": 50257, "n_heads": H}

    capsys.readouterr()  # the training run's tables
    generate_job.run(plain(compose_config("generate", [
        "init=checkpoint", f"init.path={path}", "device=cpu", "prompt=Hello", "temperature=0", "max_new_tokens=5"])))
    model = load(path).eval()
    greedy = generate_tokens(model, [tokenizer.encode("Hello")], max_new_tokens=5, temperature=0.0,
                             eos_id=tokenizer.eot_id)[0]
    assert capsys.readouterr().out == "Hello" + tokenizer.decode([t for t in greedy if t != tokenizer.eot_id]) + "\n"


def test_export_turns_a_peer_file_into_a_transformers_folder(tmp_path, nanogpt_from_scratch):
    """nanoGPT's exact GELU survives the trip: config.json says activation_function="gelu"."""
    from gpt_lightning.weights.export import export_checkpoint

    path, hf = nanogpt_from_scratch
    folder = export_checkpoint(path, tmp_path / "export")
    exported = GPT2LMHeadModel.from_pretrained(folder).eval()
    assert exported.config.activation_function == "gelu"
    with torch.no_grad():
        diff = (exported(ids(50257)).logits - hf(ids(50257)).logits[..., :50257]).abs().max().item()
    assert diff <= 1e-4, diff
    back = load(folder)  # and the folder reads back as the same model
    assert back.config.gelu == "exact"
    assert_same_logits(back, exported, vocab=50257)
