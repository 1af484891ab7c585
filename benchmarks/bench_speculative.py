"""Speculative decoding vs plain greedy decoding of the same target: acceptance and speed.

Engines, all greedy on the same prompts (one row at a time, as speculative decoding runs),
interleaved in a rotating order per repeat, medians reported, ratios last:

    target         generate(target)                          the baseline
    spec draft k   speculative_generate(target, draft, k)    --draft: a smaller trained model
    spec int8 k    speculative_generate(target, int8 copy)   self-speculation: the draft is the
                                                             target with int8 weights

Every speculative engine must return the target's own greedy tokens (checked and printed).
The figures depend on how often the draft agrees with the target (acceptance: accepted /
proposed tokens) and on how cheap a draft step is next to a target step; a target forward
over k + 1 tokens costs little more than over one only while decoding is memory-bound.

    python benchmarks/bench_speculative.py --target outputs/speed/target/export \\
        --draft outputs/speed/draft/export --k 2 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning import get_tokenizer  # noqa: E402
from gpt_lightning.data.pretrain import CORPORA  # noqa: E402
from gpt_lightning.download import fetch_dataset  # noqa: E402
from gpt_lightning.generate.sampling import generate, to_inference_layout  # noqa: E402
from gpt_lightning.weights.sources import build_model  # noqa: E402
from gpt_lightning.quantize import int8_draft  # noqa: E402
from gpt_lightning.generate.speculative import SpeculativeStats, speculative_generate  # noqa: E402


def load(path: str):
    return to_inference_layout(build_model({"name": "checkpoint", "path": path}, {}).eval())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="init.path of the target model")
    p.add_argument("--draft", default=None, help="init.path of a smaller draft model (same vocabulary)")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4], help="proposals per target forward")
    p.add_argument("--prompts", type=int, default=4, help="prompts (lines of The Verdict)")
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = get_tokenizer()
    target = load(args.target)
    drafts = {"int8": int8_draft(target)}  # what draft.init=int8 runs
    if args.draft:
        drafts = {"draft": load(args.draft)} | drafts
    lines = [line.strip() for line in fetch_dataset(CORPORA["verdict"]).read_text().splitlines() if len(line.split()) > 8]
    prompts = [tok.encode(" ".join(line.split()[:8])) for line in lines[:: max(1, len(lines) // args.prompts)]]
    prompts = prompts[: args.prompts]

    engines = {"target": lambda stats: [generate(target, [q], max_new_tokens=args.new_tokens, temperature=0.0)[0]
                                        for q in prompts]}
    for name, draft in drafts.items():
        for k in args.k:
            engines[f"spec {name} k={k}"] = (lambda d, k: lambda stats: speculative_generate(
                target, d, prompts, k=k, max_new_tokens=args.new_tokens, temperature=0.0, stats=stats))(draft, k)
    sizes = ", ".join(f"draft {d.num_params() / 1e6:.1f}M" for n, d in drafts.items() if n == "draft")
    sizes += (", " if sizes else "") + "int8 (the target with int8 weights)"
    print(f"target {target.num_params() / 1e6:.1f}M, drafts: {sizes}; {len(prompts)} prompts x {args.new_tokens} "
          f"new tokens, greedy, {torch.get_num_threads()} threads, {args.repeats} interleaved repeats", flush=True)

    reference = engines["target"](None)
    stats = {}
    for name, fn in engines.items():  # warm-up, correctness and acceptance
        stats[name] = SpeculativeStats()
        same = fn(stats[name]) == reference
        if name != "target":
            print(f"{name:<16} tokens identical to the target's greedy output: {'yes' if same else 'NO'}; "
                  f"acceptance {stats[name].acceptance_rate:.0%}, "
                  f"{stats[name].new_tokens / stats[name].target_forwards:.2f} tokens per target forward", flush=True)
    names, rates = list(engines), {n: [] for n in engines}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            engines[name](SpeculativeStats())
            rates[name].append(len(prompts) * args.new_tokens / (time.perf_counter() - start))
    median = {n: statistics.median(v) for n, v in rates.items()}
    print()
    for name in names:
        print(f"{name:<16} {median[name]:8.1f} new tokens/s  (runs: {', '.join(f'{x:.1f}' for x in rates[name])})")
    for name in names[1:]:
        print(f"{name:<16} speed-up over the target alone: {median[name] / median['target']:.2f}x")


if __name__ == "__main__":
    main()
