"""int8 vs fp32 on a trained model: perplexity on Tiny Shakespeare and The Verdict, and the
share of prompts whose greedy continuation is the same token for token.

The model is any checkpoint generate.py takes as init=checkpoint (a Lightning .ckpt, an
export folder, a transformers GPT-2 folder). Perplexity is over non-overlapping windows of
context_length tokens (the first --max-tokens of each corpus); greedy prompts are the
first words of --prompts lines drawn evenly from both texts, --new-tokens each.

    python train.py hydra.run.dir=outputs/quality logger=none        # gpt2_mini on The Verdict
    python benchmarks/int8_quality.py outputs/quality/export
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning import get_tokenizer  # noqa: E402
from gpt_lightning.data.pretrain import CORPORA  # noqa: E402
from gpt_lightning.download import fetch_dataset  # noqa: E402
from gpt_lightning.generate.sampling import generate  # noqa: E402
from gpt_lightning.weights.sources import build_model  # noqa: E402
from gpt_lightning.quantize import quantize_model  # noqa: E402


def perplexity(model, ids: list[int], batch: int = 8) -> float:
    ctx = model.config.context_length
    windows = torch.tensor(ids[: (len(ids) - 1) // ctx * ctx + 1])
    inputs = windows[:-1].view(-1, ctx)
    targets = windows[1:].view(-1, ctx)
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(inputs), batch):
            logits = model(inputs[i:i + batch])
            total += F.cross_entropy(logits.flatten(0, 1), targets[i:i + batch].flatten(), reduction="sum").item()
            count += targets[i:i + batch].numel()
    return math.exp(total / count)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="init.path of a trained model")
    p.add_argument("--max-tokens", type=int, default=40_000, help="tokens of each corpus for perplexity")
    p.add_argument("--prompts", type=int, default=60, help="greedy prompts (half from each corpus)")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = get_tokenizer()
    fp32 = build_model({"name": "checkpoint", "path": args.checkpoint}, {}).eval()
    int8 = quantize_model(copy.deepcopy(fp32))
    print(f"{args.checkpoint}: {fp32.num_params() / 1e6:.1f}M parameters, context {fp32.config.context_length}")

    prompts = []
    for name in ("shakespeare", "verdict"):
        text = fetch_dataset(CORPORA[name]).read_text(encoding="utf-8")
        ids = tok.encode(text)[: args.max_tokens]
        a, b = perplexity(fp32, ids), perplexity(int8, ids)
        print(f"perplexity {name:<12} ({len(ids):,} tokens)  fp32 {a:9.3f}  int8 {b:9.3f}  int8/fp32 {b / a:.4f}",
              flush=True)
        lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 6]
        step = max(1, len(lines) // (args.prompts // 2))
        prompts += [" ".join(line.split()[:6]) for line in lines[::step][: args.prompts // 2]]

    encoded = [tok.encode(t) for t in prompts]
    a = generate(fp32, encoded, max_new_tokens=args.new_tokens, temperature=0.0)
    b = generate(int8, encoded, max_new_tokens=args.new_tokens, temperature=0.0)
    same = sum(x == y for x, y in zip(a, b))
    agree = [next((i for i, (s, t) in enumerate(zip(x, y)) if s != t), len(x)) for x, y in zip(a, b)]
    print(f"greedy, {len(prompts)} prompts x {args.new_tokens} new tokens: identical to fp32 for {same}/{len(prompts)} "
          f"({same / len(prompts):.0%}); mean tokens before the first difference {sum(agree) / len(agree):.1f}")


if __name__ == "__main__":
    main()
