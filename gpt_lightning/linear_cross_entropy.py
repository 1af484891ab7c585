"""The LM head and the cross-entropy in one step, without the full (B, T, V) logits.

A training step's logits are the largest tensor it makes: batch 16 x 1024 positions x
50,257 tokens is 3.1 GiB in fp32, and autograd keeps about three such copies alive (the
logits, their fp32 cast, the softmax gradient). :func:`linear_cross_entropy` walks the
positions ``chunk`` rows at a time: each chunk's logits are made, turned into the loss and,
when a gradient is wanted, straight into its gradients (``softmax - one_hot`` times the
hidden states and the head weight), then freed. Only the gradients of the hidden states
(B, T, C) and of the head weight (V, C) outlive a chunk; backward just scales them by the
incoming gradient. So nothing is recomputed (the two gradient products move from backward
into forward) and the peak holds one chunk of logits instead of three full copies.

Hand-written because the fused kernels that do this (Liger's, Apple's cut-cross-entropy)
are Triton/CUDA-only, and the product must run on CPUs too. Under autocast the products
run in the autocast dtype, like the ``nn.Linear`` they replace; the softmax and the loss
are fp32, as ``F.cross_entropy(logits.float())`` computes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gpt_lightning.tokenizer import IGNORE_INDEX

CHUNK_BYTES = 256 * 2**20  # fp32 logits per chunk (256 MiB: 1,335 positions of GPT-2's vocabulary)


def chunk_rows(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * vocab_size))


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         chunk: int | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, reduction="sum")`` in chunks of positions.

    hidden: (..., C); weight: (V, C); targets: (...) ids, ``ignore_index`` ones skipped.
    Returns the summed loss (a scalar, fp32) with gradients for ``hidden`` and ``weight``.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    t = targets.reshape(-1)
    rows = chunk or chunk_rows(weight.shape[0])
    wants_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _LinearCrossEntropy.apply(h, weight, t, rows, ignore_index, wants_grad)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int,
                ignore_index: int, wants_grad: bool) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        grad_h = torch.empty_like(h) if wants_grad else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_grad else None
        for start in range(0, h.shape[0], rows):
            h_c, t_c = h[start:start + rows], targets[start:start + rows]
            raw = F.linear(h_c, weight)  # (n, V); autocast picks the product's dtype
            logits = raw.float()
            if not wants_grad:
                total += F.cross_entropy(logits, t_c, ignore_index=ignore_index, reduction="sum")
                continue
            keep = t_c != ignore_index  # (n,)
            log_z = torch.logsumexp(logits, dim=-1)  # (n,)
            safe = t_c.clamp(min=0)
            picked = logits.gather(1, safe.unsqueeze(1)).squeeze(1)  # (n,)
            total += ((log_z - picked) * keep).sum()
            # d loss / d logits = softmax - one_hot, zero on ignored rows; reuses the logits' memory
            grad = logits.sub_(log_z.unsqueeze(1)).exp_()
            grad[torch.arange(len(t_c), device=grad.device), safe] -= 1
            grad.mul_(keep.unsqueeze(1))
            grad = grad.to(raw.dtype)  # the gradient products run in the dtype the forward product did
            del raw, logits
            grad_h[start:start + rows] = grad @ weight  # (n, C)
            grad_w += grad.t() @ h_c  # (V, C)
        if wants_grad:
            ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None
