"""New tokens/s of our KV-cache greedy generation vs transformers' GPT2LMHeadModel.generate.

Both models hold the same random weights (ours is built, exported with save_pretrained and
loaded by transformers with SDPA attention). Runs alternate ours/HF, the order flipping
every repeat, and the medians are reported, so a slow start or thermal drift hits both.
Each run decodes exactly --new-tokens per row (no eos), greedy, use_cache=True.

    python benchmarks/bench_generate.py                       # 124M, batch 1 and 8, CPU
    python benchmarks/bench_generate.py --device cuda --dtype bfloat16 --new-tokens 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning import GPT, SIZES, GPTConfig  # noqa: E402
from gpt_lightning.generation import generate  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_small", choices=sorted(SIZES), help="model shape")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="rows per generate call")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine and batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(args, folder: Path):
    import transformers

    torch.manual_seed(0)
    ours = GPT(GPTConfig.from_name(args.size))
    ours.save_pretrained(folder)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    ours = ours.to(device=device, dtype=dtype).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)
    hf = hf.to(device).eval()
    hf.generation_config.eos_token_id = None  # decode exactly --new-tokens, like ours (eos_id=None)
    hf.generation_config.pad_token_id = 0
    return ours, hf


def run_ours(model, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    return generate(model, prompts.tolist(), max_new_tokens=new_tokens, temperature=0.0)


def run_hf(model, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    with torch.inference_mode():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                             min_new_tokens=0, do_sample=False, use_cache=True)
    return out[:, prompts.shape[1]:].tolist()


def timed(fn, *args) -> tuple[float, list[list[int]]]:
    device = args[1].device
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return time.perf_counter() - start, out


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        ours, hf = build_models(args, Path(tmp))
    cfg = ours.config
    if args.prompt_len + args.new_tokens > cfg.context_length:
        sys.exit(f"error: --prompt-len + --new-tokens must fit context_length={cfg.context_length}")
    print(f"{args.size} ({ours.num_params() / 1e6:.0f}M) on {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{args.repeats} interleaved repeats, medians")
    g = torch.Generator().manual_seed(1)
    engines = {"ours": run_ours, "hf": run_hf}
    rates: dict[tuple[str, int], list[float]] = {}
    for bs in args.batch_sizes:
        prompts = torch.randint(0, cfg.vocab_size, (bs, args.prompt_len), generator=g).to(device)
        outs = {name: fn(model, prompts, args.new_tokens)  # warm-up, and the same tokens?
                for (name, fn), model in zip(engines.items(), (ours, hf))}
        same = outs["ours"] == outs["hf"]
        print(f"batch {bs}: greedy tokens identical to HF: {'yes' if same else 'NO'}")
        for r in range(args.repeats):
            order = list(zip(engines.items(), (ours, hf)))
            for (name, fn), model in (order if r % 2 == 0 else order[::-1]):
                seconds, _ = timed(fn, model, prompts, args.new_tokens)
                rates.setdefault((name, bs), []).append(bs * args.new_tokens / seconds)
    print()
    for bs in args.batch_sizes:
        for name in engines:
            runs = rates[(name, bs)]
            print(f"batch {bs:>2}  {name:<4}  {statistics.median(runs):8.1f} new tokens/s  "
                  f"(runs: {', '.join(f'{x:.1f}' for x in runs)})")
    for bs in args.batch_sizes:
        ratio = statistics.median(rates[("ours", bs)]) / statistics.median(rates[("hf", bs)])
        print(f"batch {bs:>2}  ours/HF = {ratio:.2f}x")


if __name__ == "__main__":
    main()
