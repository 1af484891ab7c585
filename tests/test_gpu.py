"""GPU checks (``pytest -m gpu``; skipped without CUDA) and benchmarks/gpu_check.sh's CPU fallback."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from gpt_lightning import GPT, GPTConfig
from gpt_lightning.generate.sampling import generate

ROOT = Path(__file__).resolve().parents[1]


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, context_length=64, n_embd=64, n_layers=2, n_heads=4)).eval()


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU, so this checks the fallback anywhere
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU is present" in result.stdout and result.stdout.count("\n") == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_logits_and_greedy_text_match_the_cpu():
    model = tiny()
    x = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
    prompts = x[:, :8].tolist()
    assert generate(model, prompts, max_new_tokens=16, temperature=0.0) == \
        generate(model.cpu(), prompts, max_new_tokens=16, temperature=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_forward_takes_a_fused_attention_kernel_and_trains():
    from torch.profiler import profile

    model = tiny().cuda().train()
    x = torch.randint(0, 97, (4, 64), device="cuda")
    with profile() as prof, torch.autocast("cuda", dtype=torch.bfloat16):
        model(x)
    names = " ".join(e.key for e in prof.key_averages())
    assert "flash" in names or "efficient" in names or "cudnn" in names, names
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]  # one batch: bf16 training must overfit it
