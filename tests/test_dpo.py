"""finetune.py task=dpo: the loss and its gradient against the DPO paper's formula, LoRA's
reference without a second copy, and a short run that learns a toy preference."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import run_job
from gpt_lightning import GPT, GPTConfig
from gpt_lightning.data.instruct import Example
from gpt_lightning.data.preference import Pair, PreferenceCollator
from gpt_lightning.lora import apply_lora
from gpt_lightning.tokenizer import EOT_ID
from gpt_lightning.train.dpo import DPOLitModule, sequence_logps

CFG = GPTConfig(vocab_size=50257, context_length=32, n_embd=32, n_layers=2, n_heads=4)


def toy_pairs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(0, 1000, (n,), generator=g).tolist()  # noqa: E731
    return [Pair(Example(ids(p), ids(c) + [EOT_ID]), Example(ids(p), ids(r) + [EOT_ID]))
            for p, c, r in ((3, 5, 2), (6, 1, 7), (2, 9, 4))]


def paper_logp(model, example: Example) -> torch.Tensor:
    """log pi(y|x): one unpadded sequence, log-softmax written out, summed over the response."""
    seq = torch.tensor(example.prompt_ids + example.response_ids)
    logits = model(seq[:-1].unsqueeze(0))[0]
    start = len(example.prompt_ids) - 1
    picked = logits[torch.arange(start, len(seq) - 1), seq[start + 1:]]
    return (picked - torch.logsumexp(logits[start:], dim=-1)).sum()


def paper_loss(policy, reference, pairs, beta):
    losses = []
    for pair in pairs:
        with torch.no_grad():
            ref_w, ref_l = paper_logp(reference, pair.chosen), paper_logp(reference, pair.rejected)
        h = beta * ((paper_logp(policy, pair.chosen) - ref_w) - (paper_logp(policy, pair.rejected) - ref_l))
        losses.append(-torch.log(torch.sigmoid(h)))  # eq. 7 of Rafailov et al. (2023)
    return torch.stack(losses).mean()


def test_loss_and_gradient_equal_the_papers_formula(one_thread):
    torch.manual_seed(0)
    model = GPT(CFG)
    start = copy.deepcopy(model)
    module = DPOLitModule(model, beta=0.3)
    with torch.no_grad():  # the policy moves away from its reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pairs = toy_pairs()
    total, count = module.loss_sum(PreferenceCollator()(pairs))
    ours = total / count
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    theirs = paper_loss(model, start, pairs, beta=0.3)
    theirs.backward()
    assert count == 3 and abs(ours.item() - theirs.item()) < 1e-5 and theirs.item() != pytest.approx(0.6931, abs=1e-3)
    worst = max((grads[n] - p.grad).abs().max().item() for n, p in model.named_parameters())
    assert worst < 1e-5
    terms = module._terms
    assert terms["accuracy"].tolist() == [float(m > 0) for m in terms["margin"].tolist()]


def test_lora_reference_is_the_base_without_adapters(one_thread):
    torch.manual_seed(1)
    base = GPT(CFG)
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, 0.5)
    module = DPOLitModule(model, beta=0.1)
    assert module.reference is None  # no second copy of the weights
    batch = PreferenceCollator()(toy_pairs(1))
    ref = module.reference_logps(batch["input_ids"], batch["targets"])
    with torch.no_grad():
        expected = sequence_logps(base(batch["input_ids"]), batch["targets"])
        adapted = sequence_logps(model(batch["input_ids"]), batch["targets"])
    assert (ref - expected).abs().max() < 1e-4
    assert (adapted - expected).abs().max() > 1e-2  # the adapters are back on afterwards


def test_short_run_raises_preference_accuracy(tmp_path, one_thread):
    records = [{"instruction": f"Reply {i}.", "chosen": "Glad to help.", "rejected": "No."} for i in range(12)]
    records += [{"prompt": f"Q{i}:", "chosen": " Fine, thanks.", "rejected": " Leave me alone."} for i in range(12)]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "run"
    result = run_job("finetune", out, [
        "task=dpo", "init=scratch", "model=gpt2_tiny", f"data.path={path}", "data.batch_size=6", "data.max_length=24",
        "data.template.preamble=", "data.val_fraction=0.25", "data.train_fraction=0.75", "trainer.max_epochs=2",
        "optim.lr=5e-3", "optim.warmup=0", "finetune.dpo.beta=0.5", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "callbacks.samples.enabled=false"])
    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    train = [e.value for e in acc.Scalars("train/preference_accuracy")]
    assert train[0] == 0.0  # policy == reference: no reward yet
    val = {tag: acc.Scalars(f"val/{tag}")[-1].value for tag in
           ("loss", "preference_accuracy", "reward_margin", "chosen_logp", "rejected_logp")}
    assert val["preference_accuracy"] == 1.0 and val["reward_margin"] > 0 and val["loss"] < 0.6931
    assert val["chosen_logp"] > val["rejected_logp"]
    assert result["best_val_loss"] == pytest.approx(min(e.value for e in acc.Scalars("val/loss")))
    tokenizer_config = json.loads((out / "export" / "tokenizer_config.json").read_text())
    assert "### Response:" in tokenizer_config["chat_template"]  # the instruction template rides along


def test_loss_and_gradient_equal_trls(tmp_path, one_thread, tokenizer, monkeypatch):
    """TRL's DPOTrainer (sigmoid loss) on the same records and weights: same loss and gradient."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from trl import DPOConfig, DPOTrainer

    from gpt_lightning.data.preference import tokenize_pairs
    from gpt_lightning.data.template import DEFAULT_TEMPLATE
    from gpt_lightning.weights.tokenizer_files import write_tokenizer_files
    from gpt_lightning.weights.hf_io import load_pretrained

    torch.manual_seed(2)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0)  # our model has no dropout here
    start = transformers.GPT2LMHeadModel(cfg).eval()
    start.save_pretrained(tmp_path / "start")
    write_tokenizer_files(tmp_path / "start", 64)
    hf_policy = copy.deepcopy(start)
    with torch.no_grad():
        for p in hf_policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf_policy.save_pretrained(tmp_path / "policy")
    records = [{"prompt": "Q: is the sky blue?\nA:", "chosen": " Yes, on a clear day.", "rejected": " No."},
               {"prompt": "Say hi", "chosen": " Hi!", "rejected": " I will not say it, sorry."},
               {"prompt": "2+2=", "chosen": "4", "rejected": "5"}]

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, per_device_train_batch_size=len(records),
                     report_to=[], use_cpu=True, max_length=None, bf16=False)  # TRL defaults to bf16 autocast
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "start")
    tok.pad_token = tok.eos_token
    trainer = DPOTrainer(model=hf_policy, ref_model=start, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(records))
    hf_policy.train()
    theirs = trainer.compute_loss(hf_policy, {k: v for k, v in next(iter(trainer.get_train_dataloader())).items()})
    theirs.backward()

    model = load_pretrained(tmp_path / "start")
    module = DPOLitModule(model, beta=0.3)  # the reference: the starting weights
    model.load_state_dict(load_pretrained(tmp_path / "policy").state_dict())
    total, count = module.loss_sum(PreferenceCollator()(tokenize_pairs(records, DEFAULT_TEMPLATE)))
    ours = total / count
    ours.backward()
    assert abs(ours.item() - theirs.item()) < 1e-5
    pairs = [(model.wte.weight, hf_policy.transformer.wte.weight),
             (model.blocks[1].mlp.fc.weight, hf_policy.transformer.h[1].mlp.c_fc.weight),
             (model.ln_f.bias, hf_policy.transformer.ln_f.bias)]
    for mine, hf in pairs:
        theirs_grad = hf.grad.t() if hf.grad.shape != mine.shape else hf.grad  # Conv1D stores (in, out)
        assert (mine.grad - theirs_grad).abs().max() < 1e-5
