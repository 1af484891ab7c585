"""Training throughput: our LightningModule under the Trainer vs plain PyTorch vs transformers.

All three train the same GPT-2 shape on the same random token batches with AdamW and
gradient clipping at 1.0. Rounds are interleaved (Lightning, plain, transformers, then
again) so drifting clocks or a busy machine hit all three alike. Each step is timed from
its start to the next step's start, so everything the Trainer does counts; tokens/s comes
from the median step time over all rounds, then the ratios are printed.

    python benchmarks/bench_train.py                     # CPU-sized defaults
    python benchmarks/bench_train.py --device cuda       # gpt2_small, 8 x 1024, bf16
    python benchmarks/bench_train.py --device cuda --precision bf16-mixed --compile

On CUDA it also prints MFU (6N + 12LTC FLOPs per token, the formula train/mfu logs, against
the GPU's dense bf16 peak from lit_module.PEAK_TFLOPS or --peak-tflops), each engine's peak
memory, and which SDPA attention kernel the forward actually ran (from the profiler).
--compile applies torch.compile to all three engines alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy

from gpt_lightning import GPT, GPTConfig  # noqa: E402
from gpt_lightning.train.module import PEAK_TFLOPS, GPTLitModule  # noqa: E402

warnings.filterwarnings("ignore")


def batches(n: int, batch: int, seq: int, vocab: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, batch, seq + 1), generator=g)
    return [{"input_ids": d[:, :-1].to(device), "targets": d[:, 1:].to(device)} for d in data]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(device: str, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def plain_loop(model, data, warmup: int, device: str, precision: str, hf: bool = False,
               compile: bool = False) -> list[float]:
    """Seconds per step of a hand-written loop: forward, loss, backward, clip, AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.startswith("cuda"))
    model.train()
    forward = torch.compile(model) if compile else model
    starts = []
    for batch in data:
        sync(device)
        starts.append(time.perf_counter())
        with autocast(device, precision):
            out = forward(batch["input_ids"])
            logits = out.logits if hf else out
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts[warmup:], starts[warmup + 1:])]


class _StepTimer(L.Callback):
    """Start times of the training steps (and the end of training)."""

    def __init__(self, device: str):
        self.device, self.starts = device, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        sync(self.device)
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.starts.append(time.perf_counter())


def lightning_loop(model, data, warmup: int, device: str, precision: str, compile: bool = False) -> list[float]:
    """Seconds per step of GPTLitModule under L.Trainer (no logger, checkpoints or progress bar)."""
    module = GPTLitModule(model, {"lr": 1e-4, "warmup": 0, "weight_decay": 0.1}, compile=compile)
    timer = _StepTimer(device)
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1,
                        precision=precision, max_steps=len(data), gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[timer], limit_val_batches=0)
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.starts[warmup:], timer.starts[warmup + 1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default=None, help="a named size (default: gpt2_small on GPU, gpt2_mini on CPU)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", default=None, help="32-true or bf16-mixed (default: bf16-mixed on GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every engine")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by GPU name)")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    size = args.size or ("gpt2_small" if gpu else "gpt2_mini")
    batch = args.batch or (8 if gpu else 4)
    cfg = GPTConfig.from_name(size, dropout=0.0)
    seq = args.seq or (1024 if gpu else 128)
    steps = args.steps or (30 if gpu else 12)
    precision = args.precision or ("bf16-mixed" if gpu else "32-true")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True

    import transformers

    torch.manual_seed(0)
    reference = GPT(cfg)
    hf_cfg = transformers.GPT2Config(n_layer=cfg.n_layers, n_head=cfg.n_heads, n_embd=cfg.n_embd,
                                     n_positions=cfg.context_length, vocab_size=cfg.vocab_size,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    data = batches(args.warmup + steps, batch, seq, cfg.vocab_size, args.device)
    print(f"{size} ({reference.num_params():,} params), batch {batch} x {seq} tokens, {precision}"
          f"{' + compile' if args.compile else ''}, {args.device}"
          f"{' (' + torch.cuda.get_device_name(args.device) + ')' if gpu else ''}, "
          f"{steps} timed steps x {args.rounds} rounds, torch {torch.__version__}", flush=True)
    print(f"attention kernel in the forward: {attention_kernel(reference, data[0], args.device, precision)}", flush=True)
    peak_memory: dict[str, int] = {}

    tokens = batch * seq
    steps_of = {"lightning (ours)": [], "plain loop (ours)": [], "plain loop (transformers)": []}
    for r in range(args.rounds):
        for name in steps_of:
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(args.device)
            model = GPT(cfg)
            model.load_state_dict(reference.state_dict())
            model.to(args.device)
            if name == "lightning (ours)":
                times = lightning_loop(model, data, args.warmup, args.device, precision, args.compile)
            elif name == "plain loop (ours)":
                times = plain_loop(model, data, args.warmup, args.device, precision, compile=args.compile)
            else:
                hf = transformers.GPT2LMHeadModel(hf_cfg)
                assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
                hf.load_state_dict(_ours_to_hf_state(reference), strict=False)
                times = plain_loop(hf.to(args.device), data, args.warmup, args.device, precision, hf=True,
                                   compile=args.compile)
            steps_of[name] += times
            if gpu:
                peak_memory[name] = max(peak_memory.get(name, 0), torch.cuda.max_memory_allocated(args.device))
            print(f"  round {r + 1}: {name:28s} {tokens / statistics.median(times):12,.0f} tokens/s", flush=True)
            del model
    rate = {k: tokens / statistics.median(v) for k, v in steps_of.items()}
    print(f"\ntokens/s from the median step time over {len(steps_of['plain loop (ours)'])} steps each")
    peak = peak_flops(args)
    flops = GPTLitModule(reference, {"lr": 1e-4})._flops_per_token()  # 6N + 12LTC, as train/mfu
    for name, value in rate.items():
        mfu = f"   MFU {value * flops / peak:6.1%}" if peak else ""
        memory = f"   peak memory {peak_memory[name] / 2**30:5.2f} GiB" if name in peak_memory else ""
        print(f"  {name:28s} {value:12,.0f}{mfu}{memory}")
    if not peak:
        print("  (MFU: needs a known GPU or --peak-tflops)")
    ratio = rate["lightning (ours)"] / rate["plain loop (ours)"]
    print("\nratios")
    print(f"  lightning / plain loop (ours)        {ratio:.3f}  (Lightning overhead {1 - ratio:+.1%}, target <= 3%)")
    print(f"  ours / transformers (plain loops)    {rate['plain loop (ours)'] / rate['plain loop (transformers)']:.3f}"
          f"  (target >= 1.0)")


def peak_flops(args) -> float | None:
    """Peak FLOP/s of the device for MFU: --peak-tflops, else the GPU's bf16 peak by name."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if not args.device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(args.device)
    return next((t * 1e12 for key, t in PEAK_TFLOPS.items() if key in name), None)


def attention_kernel(model: GPT, batch: dict, device: str, precision: str) -> str:
    """Which scaled_dot_product_attention kernel one forward really ran, from the profiler's op names."""
    from torch.profiler import profile

    model = model.to(device).train()
    with profile() as prof, autocast(device, precision), torch.no_grad():
        model(batch["input_ids"][:1])
    names = {e.key for e in prof.key_averages() if "attention" in e.key or "sdpa" in e.key.lower()}
    kinds = [("flash", "flash"), ("efficient", "memory-efficient"), ("cudnn", "cuDNN"), ("math", "math (unfused)")]
    found = [label for key, label in kinds if any(key in n for n in names)]
    model.cpu()
    return f"{' + '.join(found) or 'unknown'}  ({', '.join(sorted(n for n in names if n.startswith('aten::_')))})"


def _ours_to_hf_state(model: GPT) -> dict:
    from gpt_lightning.weights.hf_io import ours_to_hf

    return ours_to_hf(model) | {"lm_head.weight": model.wte.weight.detach().cpu()}


if __name__ == "__main__":
    main()
