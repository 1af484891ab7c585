"""New tokens/s of our KV-cache greedy generation vs transformers' GPT2LMHeadModel.generate.

All engines hold the same random weights (ours is built, exported with save_pretrained and
loaded by transformers with SDPA attention). Every run decodes exactly --new-tokens per row
(no eos), greedy, with a KV cache (use_cache=True for transformers). Engines take turns
within each repeat, in a rotating order, and medians are reported, so a noisy neighbour
or a slow start hits all of them alike. Engines:

    ours         generate() on the model as loaded
    ours+layout  the same after to_inference_layout(model), which generate.py applies on
                 CPUs: weights stored (in, out) like GPT-2's Conv1D, for faster CPU GEMMs
    ours int8    the same after quantize_model(model) (generate.py quantize=int8, CPUs only):
                 int8 weights per output channel, see gpt_lightning/quantize.py
    hf           GPT2LMHeadModel.generate

The fp32 engines must produce identical greedy tokens; int8 is a different model (rounded
weights), so its share of tokens equal to fp32's is printed instead.

    python benchmarks/bench_generate.py                       # 124M, batch 1 and 8, CPU
    python benchmarks/bench_generate.py --device cuda --dtype bfloat16 --new-tokens 256
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import GPT, SIZES, GPTConfig  # noqa: E402
from gpt_lightning.generate.sampling import generate, to_inference_layout  # noqa: E402
from gpt_lightning.quantize import quantize_model  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_small", choices=sorted(SIZES), help="model shape")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens per row")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="rows per generate call")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per engine and batch size")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--no-int8", action="store_true", help="skip the int8 engine (it needs a CPU and float32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    return p.parse_args()


def build_engines(args, folder: Path) -> dict:
    """name -> (function, model), all with the same weights."""
    import transformers

    torch.manual_seed(0)
    ours = GPT(GPTConfig.from_name(args.size))
    save_pretrained(ours, folder)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    ours = ours.to(device=device, dtype=dtype).eval()
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)
    hf = hf.to(device).eval()
    hf.generation_config.eos_token_id = None  # decode exactly --new-tokens, like ours (eos_id=None)
    hf.generation_config.pad_token_id = 0
    engines = {"ours": (run_ours, ours), "ours+layout": (run_ours, to_inference_layout(copy.deepcopy(ours)))}
    if not args.no_int8:
        if device.type != "cpu" or dtype != torch.float32:
            sys.exit("error: the int8 engine needs --device cpu --dtype float32; add --no-int8")
        engines["ours int8"] = (run_ours, quantize_model(copy.deepcopy(ours)))
    return engines | {"hf": (run_hf, hf)}


def run_ours(model, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    return generate(model, prompts.tolist(), max_new_tokens=new_tokens, temperature=0.0)


def run_hf(model, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    with torch.inference_mode():
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                             do_sample=False, use_cache=True)
    return out[:, prompts.shape[1]:].tolist()


def timed(fn, model, prompts: torch.Tensor, new_tokens: int) -> float:
    if prompts.device.type == "cuda":
        torch.cuda.synchronize(prompts.device)
    start = time.perf_counter()
    fn(model, prompts, new_tokens)
    if prompts.device.type == "cuda":
        torch.cuda.synchronize(prompts.device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        engines = build_engines(args, Path(tmp))
    cfg = engines["ours"][1].config
    if args.prompt_len + args.new_tokens > cfg.context_length:
        sys.exit(f"error: --prompt-len + --new-tokens must fit context_length={cfg.context_length}")
    print(f"{args.size} ({engines['ours'][1].num_params() / 1e6:.0f}M) on {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{args.repeats} interleaved repeats, medians", flush=True)
    g = torch.Generator().manual_seed(1)
    names = list(engines)
    rates: dict[tuple[str, int], list[float]] = {}
    for bs in args.batch_sizes:
        prompts = torch.randint(0, cfg.vocab_size, (bs, args.prompt_len), generator=g).to(args.device)
        outs = {name: fn(model, prompts, args.new_tokens) for name, (fn, model) in engines.items()}  # warm-up
        same = all(outs[name] == outs["hf"] for name in names if name != "ours int8")
        print(f"batch {bs}: greedy tokens of the fp32 engines identical: {'yes' if same else 'NO'}", flush=True)
        if "ours int8" in outs:
            pairs = [(a, b) for ra, rb in zip(outs["ours int8"], outs["ours"]) for a, b in zip(ra, rb)]
            print(f"batch {bs}: int8 greedy tokens equal to fp32: {sum(a == b for a, b in pairs)}/{len(pairs)} "
                  f"(random weights; see benchmarks/int8_quality.py for a trained model)", flush=True)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds = timed(*engines[name], prompts, args.new_tokens)
                rates.setdefault((name, bs), []).append(bs * args.new_tokens / seconds)
    print()
    median = {key: statistics.median(runs) for key, runs in rates.items()}
    for bs in args.batch_sizes:
        for name in names:
            runs = ", ".join(f"{x:.1f}" for x in rates[(name, bs)])
            print(f"batch {bs:>2}  {name:<11} {median[(name, bs)]:8.1f} new tokens/s  (runs: {runs})")
    for bs in args.batch_sizes:
        print(f"batch {bs:>2}  ours/HF = {median[('ours', bs)] / median[('hf', bs)]:.2f}x   "
              f"ours+layout/HF = {median[('ours+layout', bs)] / median[('hf', bs)]:.2f}x")
    for bs in args.batch_sizes:
        if ("ours int8", bs) in median:
            print(f"batch {bs:>2}  int8/ours+layout = {median[('ours int8', bs)] / median[('ours+layout', bs)]:.2f}x   "
                  f"int8/HF = {median[('ours int8', bs)] / median[('hf', bs)]:.2f}x")


if __name__ == "__main__":
    main()
