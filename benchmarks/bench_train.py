"""Training throughput: our LightningModule under the Trainer vs plain PyTorch vs transformers.

All three train the same GPT-2 shape on the same random token batches with AdamW and
gradient clipping at 1.0. Rounds are interleaved (Lightning, plain, transformers, then
again) so drifting clocks or a busy machine hit all three alike. Each step is timed from
its start to the next step's start, so everything the Trainer does counts; tokens/s comes
from the median step time over all rounds, then the ratios are printed.

    python benchmarks/bench_train.py                     # CPU-sized defaults
    python benchmarks/bench_train.py --device cuda       # gpt2_small, 8 x 1024, bf16
    python benchmarks/bench_train.py --device cuda --precision bf16-mixed --compile
    python benchmarks/bench_train.py --precision 32-true bf16-mixed   # bf16 rows, ratios vs fp32
    python benchmarks/bench_train.py --memory --size gpt2_tiny --batch 4 --seq 1024  # peak memory

On CUDA it also prints MFU (6N + 12LTC FLOPs per token, the formula train/mfu logs, against
the GPU's dense bf16 peak from lit_module.PEAK_TFLOPS or --peak-tflops), each engine's peak
memory, and which SDPA attention kernel the forward actually ran (from the profiler).
--compile applies torch.compile to all three engines alike.

With several --precision values (e.g. 32-true bf16-mixed) every engine runs under each, all
interleaved within a round, and the ratios bf16 / fp32 and Lightning / plain loop under the
same autocast are printed last.

--memory measures the peak resident memory of training steps instead (each engine in a
process of its own, ru_maxrss, minus the memory before the first step): the LightningModule
as it is (the LM head and loss chunk by chunk, linear_cross_entropy.py) against the same
module computing full (B, T, V) logits then the cross-entropy, as it did before; ratio last.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy

from gpt_lightning import GPT, GPTConfig  # noqa: E402
from gpt_lightning.config.schemas import PerfConfig  # noqa: E402
from gpt_lightning.data import IGNORE_INDEX  # noqa: E402
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


class FullLogitsModule(GPTLitModule):
    """GPTLitModule as it was before linear_cross_entropy.py: full (B, T, V) logits, then the loss."""

    def loss_sum(self, batch: dict):
        logits = self._forward(batch["input_ids"])  # (B, T, V)
        targets = batch["targets"]
        total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                                reduction="sum")
        return total, (targets != IGNORE_INDEX).sum()


def lightning_loop(model, data, warmup: int, device: str, precision: str, compile: bool = False,
                   module_class=GPTLitModule) -> list[float]:
    """Seconds per step of GPTLitModule under L.Trainer (no logger, checkpoints or progress bar)."""
    module = module_class(model, {"lr": 1e-4, "warmup": 0, "weight_decay": 0.1}, perf=PerfConfig(compile=compile))
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
    parser.add_argument("--precision", nargs="+", default=None,
                        help="32-true and/or bf16-mixed (default: bf16-mixed on GPU, 32-true on CPU)")
    parser.add_argument("--no-transformers", action="store_true", help="leave out the transformers loop")
    parser.add_argument("--memory", action="store_true", help="peak memory of chunked vs full-logits loss instead")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every engine")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by GPU name)")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    size = args.size or ("gpt2_small" if gpu else "gpt2_mini")
    batch = args.batch or (8 if gpu else 4)
    cfg = GPTConfig.from_name(size, dropout=0.0)
    seq = args.seq or (1024 if gpu else 128)
    steps = args.steps or (30 if gpu else 12)
    precisions = args.precision or ["bf16-mixed" if gpu else "32-true"]
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    if args.memory_child:
        return memory_child(args, cfg, batch, seq, precisions[0])
    if args.memory:
        return memory_main(args, size, batch, seq, precisions[0])
    precision = precisions[0]

    import transformers

    torch.manual_seed(0)
    reference = GPT(cfg)
    hf_cfg = transformers.GPT2Config(n_layer=cfg.n_layers, n_head=cfg.n_heads, n_embd=cfg.n_embd,
                                     n_positions=cfg.context_length, vocab_size=cfg.vocab_size,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    data = batches(args.warmup + steps, batch, seq, cfg.vocab_size, args.device)
    print(f"{size} ({reference.num_params():,} params), batch {batch} x {seq} tokens, {' and '.join(precisions)}"
          f"{' + compile' if args.compile else ''}, {args.device}"
          f"{' (' + torch.cuda.get_device_name(args.device) + ')' if gpu else ''}, "
          f"{steps} timed steps x {args.rounds} rounds, torch {torch.__version__}", flush=True)
    print(f"attention kernel in the forward: {attention_kernel(reference, data[0], args.device, precision)}", flush=True)
    peak_memory: dict[str, int] = {}

    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    tokens = batch * seq
    engines = ("lightning (ours)", "plain loop (ours)") + (() if args.no_transformers else ("plain loop (transformers)",))
    steps_of = {(e, p): [] for p in precisions for e in engines}
    for r in range(args.rounds):
        order = list(steps_of)
        order = order[r % len(order):] + order[:r % len(order)]  # rotating, so load drifts hit all alike
        for key in order:
            name, precision = key
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
            steps_of[key] += times
            if gpu:
                peak_memory[key] = max(peak_memory.get(key, 0), torch.cuda.max_memory_allocated(args.device))
            print(f"  round {r + 1}: {name:28s} {precision:10s} {tokens / statistics.median(times):12,.0f} tokens/s"
                  f"  (load {os.getloadavg()[0]:.1f})", flush=True)
            del model
    rate = {k: tokens / statistics.median(v) for k, v in steps_of.items()}
    print(f"\ntokens/s from the median step time over {args.rounds * steps} steps each; load average at the end "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    peak = peak_flops(args)
    flops = GPTLitModule(reference, {"lr": 1e-4})._flops_per_token(seq)  # 6N + 12LTC, as train/mfu
    for (name, precision), value in rate.items():
        mfu = f"   MFU {value * flops / peak:6.1%}" if peak else ""
        memory = (f"   peak memory {peak_memory[name, precision] / 2**30:5.2f} GiB"
                  if (name, precision) in peak_memory else "")
        print(f"  {name:28s} {precision:10s} {value:12,.0f}{mfu}{memory}")
    if not peak:
        print("  (MFU: needs a known GPU or --peak-tflops)")
    print("\nratios")
    for precision in precisions:
        ratio = rate["lightning (ours)", precision] / rate["plain loop (ours)", precision]
        print(f"  {precision:10s} lightning / plain loop (ours)        {ratio:.3f}  (Lightning overhead {1 - ratio:+.1%})")
        if not args.no_transformers:
            print(f"  {precision:10s} ours / transformers (plain loops)    "
                  f"{rate['plain loop (ours)', precision] / rate['plain loop (transformers)', precision]:.3f}")
    for precision in precisions[1:]:
        for name in engines:
            print(f"  {name:28s} {precision} / {precisions[0]}  "
                  f"{rate[name, precision] / rate[name, precisions[0]]:.3f}")


MEMORY_ENGINES = {"full logits (before)": FullLogitsModule, "chunked loss (ours)": GPTLitModule}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(args, cfg: GPTConfig, batch: int, seq: int, precision: str) -> None:
    """One engine's training steps in this process: prints the RSS before them and the peak."""
    if seq > cfg.context_length:
        cfg = GPTConfig.from_dict({**cfg.to_dict(), "context_length": seq})
    torch.manual_seed(0)
    model = GPT(cfg)
    data = batches(2, batch, seq, cfg.vocab_size, args.device)
    before = _rss_bytes()
    lightning_loop(model, data, 0, args.device, precision, module_class=MEMORY_ENGINES[args.memory_child])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(f"RSS {before} {peak}")


def memory_main(args, size: str, batch: int, seq: int, precision: str) -> None:
    print(f"{size}, batch {batch} x {seq} tokens, {precision}: peak resident memory of 2 training steps "
          f"(fresh process each; load average {os.getloadavg()[0]:.1f})", flush=True)
    peaks = {}
    for name in MEMORY_ENGINES:
        cmd = [sys.executable, __file__, "--memory-child", name, "--size", size, "--batch", str(batch),
               "--seq", str(seq), "--precision", precision, "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        before, peak = map(int, out.split("RSS ")[-1].split())
        peaks[name] = peak - before
        print(f"  {name:22s} peak {peak / 2**30:6.2f} GiB, {peaks[name] / 2**30:6.2f} GiB above the model "
              f"and data ({before / 2**30:.2f} GiB)", flush=True)
    theirs, ours = peaks["full logits (before)"], peaks["chunked loss (ours)"]
    print(f"\nratio of the training steps' memory, chunked / full logits: {ours / theirs:.3f} "
          f"({theirs / ours:.1f}x less)")


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
