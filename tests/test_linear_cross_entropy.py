"""The chunked LM head + cross-entropy (linear_cross_entropy.py) against the full-logits
formula it replaces: same loss, same gradients (float tolerance), ignored targets skipped."""

import pytest
import torch
import torch.nn.functional as F

from gpt_lightning import GPT, GPTConfig
from gpt_lightning.data import IGNORE_INDEX
from gpt_lightning.linear_cross_entropy import linear_cross_entropy


def reference(h, w, t):
    return F.cross_entropy((h @ w.t()).flatten(0, 1).float(), t.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64])  # one row, chunks that do not divide B*T, one chunk
def test_loss_and_gradients_equal_the_full_logits_formula(chunk):
    torch.manual_seed(0)
    h = torch.randn(3, 10, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 50, (3, 10))
    t[0, :4] = IGNORE_INDEX
    t[2, -1] = IGNORE_INDEX
    got = linear_cross_entropy(h, w, t, chunk=chunk)
    (2.5 * got).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    want = reference(h, w, t)
    (2.5 * want).backward()
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=1e-6)
    # both take the softmax in fp32 (the reference casts its logits, as training does)
    torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-5)
    assert gh[0, :4].abs().max() == 0  # ignored positions get no gradient


def test_gpt_forward_with_targets_equals_logits_then_cross_entropy_tied_and_untied():
    for tie in (True, False):
        torch.manual_seed(1)
        model = GPT(GPTConfig(vocab_size=97, context_length=16, n_embd=32, n_layers=2, n_heads=2, tie_embeddings=tie))
        idx = torch.randint(0, 97, (2, 16))
        t = torch.roll(idx, -1, 1)
        t[:, -1] = IGNORE_INDEX
        model(idx, targets=t).backward()
        got = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        want = F.cross_entropy(model(idx).flatten(0, 1), t.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        want.backward()
        torch.testing.assert_close(model(idx, targets=t).detach(), want.detach(), rtol=1e-5, atol=1e-5)
        for n, p in model.named_parameters():
            torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_no_gradient_wanted_and_bf16_autocast_stay_close():
    torch.manual_seed(2)
    h = torch.randn(40, 32, requires_grad=True)
    w = torch.randn(300, 32, requires_grad=True)
    t = torch.randint(0, 300, (40,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk=9), reference(h[None], w, t[None]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, t, chunk=9)
        want = reference(h[None], w, t[None])
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)  # the same bf16 products, summed per chunk
    got.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    want.backward()
    assert gh.dtype == h.dtype and gw.dtype == w.dtype
    torch.testing.assert_close(gh, h.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, w.grad, rtol=2e-2, atol=2e-2)
