"""What self-speculative decoding costs per round at a model shape: one fp32 decode step, one
fp32 forward verifying k + 1 tokens, and one int8 draft step (random weights, KV cache).

Self-speculative decoding (``generate.py draft.init=int8``) runs k int8 steps and one fp32
forward over k + 1 tokens per round, and gains E = (1 - a^(k+1)) / (1 - a) tokens per round
when the draft's tokens are accepted with probability a. So the speed-up over plain fp32
decoding is E / (k * int8 step + verify(k + 1)) with both costs in fp32 steps; this prints
the measured costs and that estimate for a few acceptance rates (the measured acceptance of
a trained model comes from bench_speculative.py). Timings are interleaved (every kind once
per repeat, in a rotating order) and medians are printed, with the load average.

    python benchmarks/bench_verify_cost.py --size gpt2_small --k 1 2 4 8 --threads 1
    python benchmarks/bench_verify_cost.py --size gpt2_xl --k 1 2 4 --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning.generate.sampling import to_inference_layout  # noqa: E402
from gpt_lightning.model import GPT, GPTConfig  # noqa: E402
from gpt_lightning.quantize import int8_draft  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_small", help="model shape (conf/model/<size>.yaml)")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8], help="proposals per round")
    p.add_argument("--context", type=int, default=64, help="tokens already in the KV cache")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--acceptance", type=float, nargs="+", default=[0.6, 0.8, 0.9])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with torch.device("meta"):
        target = GPT(GPTConfig.from_name(args.size))
    target = target.to_empty(device="cpu")  # random weights, drawn fast: timing does not depend on them
    if target.config.tie_embeddings:
        target.lm_head.weight = target.wte.weight  # to_empty made two tensors of the tied one
    with torch.no_grad():
        for param in target.parameters():
            param.normal_(0.0, 0.02)
    target = to_inference_layout(target.eval())
    draft = int8_draft(target)
    V = target.config.vocab_size
    prompt = torch.randint(0, V, (1, args.context))

    for model in (target, draft):  # the prompt is cached once; each timed forward rewrites the slots after it
        model.setup_kv_cache(1, args.context + max(args.k) + 1)
        with torch.inference_mode():
            model(prompt, input_pos=0, last_only=True)

    def timed(model: GPT, n: int) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            model(torch.randint(0, V, (1, n)), input_pos=args.context)
            return time.perf_counter() - start

    kinds = {"fp32 step": (target, 1), "int8 step": (draft, 1)} | {f"verify k={k}": (target, k + 1) for k in args.k}
    times = {name: [] for name in kinds}
    print(f"{args.size} ({target.num_params() / 1e6:.0f}M, random weights), {args.context} cached tokens, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    names = list(kinds)
    for r in range(args.repeats + 1):  # the first repeat warms up
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = timed(*kinds[name])
            if r:
                times[name].append(t)
    med = {name: statistics.median(v) for name, v in times.items()}
    step, int8 = med["fp32 step"], med["int8 step"]
    print(f"fp32 step {step * 1e3:.1f} ms, int8 step {int8 * 1e3:.1f} ms = {int8 / step:.2f} fp32 steps")
    for k in args.k:
        print(f"verify k={k} ({k + 1} tokens): {med[f'verify k={k}'] * 1e3:.1f} ms = "
              f"{med[f'verify k={k}'] / step:.2f} fp32 steps")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("\nestimated speed-up over fp32 = E(tokens per round) / round cost in fp32 steps")
    print("k  | " + " | ".join(f"a={a:.1f}" for a in args.acceptance))
    for k in args.k:
        cost = k * int8 / step + med[f"verify k={k}"] / step
        gains = [(1 - a ** (k + 1)) / (1 - a) / cost for a in args.acceptance]
        print(f"{k:<2d} | " + " | ".join(f"{g:.2f}x" for g in gains))


if __name__ == "__main__":
    main()
