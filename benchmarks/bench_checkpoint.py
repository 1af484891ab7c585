"""The training stall per checkpoint: before (two full synchronous writes) vs after (async + link).

After a validation that improves val/loss the run keeps two checkpoints of the same state,
``best-step<N>.ckpt`` and ``last.ckpt``. Before: both were full, synchronous, atomic writes
(``AtomicCheckpointIO``), so training waited for two serializations and two fsyncs. After:
``AsyncAtomicCheckpointIO`` copies the tensors to host memory, writes the best checkpoint
in a background thread, and ``last.ckpt`` is a hard link to it (``link_checkpoint``).

Each round trains ``--steps`` AdamW steps of a GPT-2 shape on random tokens and checkpoints
every ``--every`` steps, with the same checkpoint dict Lightning builds (weights + optimizer
state). The two modes alternate round by round (interleaved, so a busy machine hits both).
Printed per mode: the median stall per checkpoint (time the training loop spends inside the
save calls), the median wall time of a round (which includes what the background writer
takes from training), and the disk used per checkpoint; the ratios come last.

    python benchmarks/bench_checkpoint.py                       # ~16M parameters, CPU
    python benchmarks/bench_checkpoint.py --n-embd 768 --n-layers 12 --device cuda   # 124M
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed copy

from gpt_lightning import GPT, GPTConfig  # noqa: E402
from gpt_lightning.train.checkpoint_io import AsyncAtomicCheckpointIO, AtomicCheckpointIO  # noqa: E402


def checkpoint_dict(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> dict:
    """What Lightning's ``trainer.save_checkpoint`` hands the CheckpointIO (the large parts)."""
    return {"global_step": step, "state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()],
            "loops": {"fit_loop": {"step": step}}}


def save_before(io: AtomicCheckpointIO, ckpt: dict, folder: Path, step: int, previous: Path | None) -> None:
    io.save_checkpoint(ckpt, folder / f"best-step{step}.ckpt")
    if previous is not None:  # top-1: Lightning removes the previous best after saving the new one
        io.remove_checkpoint(previous)
    io.save_checkpoint(ckpt, folder / "last.ckpt")


def save_after(io: AsyncAtomicCheckpointIO, ckpt: dict, folder: Path, step: int, previous: Path | None) -> None:
    best = folder / f"best-step{step}.ckpt"
    io.save_checkpoint(ckpt, best)
    if previous is not None:
        io.remove_checkpoint(previous)
    io.link_checkpoint(best, folder / "last.ckpt")


def run_round(mode: str, args, model, optimizer, folder: Path) -> tuple[list[float], float, int]:
    io = AtomicCheckpointIO() if mode == "before" else AsyncAtomicCheckpointIO()
    save = save_before if mode == "before" else save_after
    g = torch.Generator().manual_seed(0)
    stalls, previous = [], None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g).to(args.device)
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.every == 0:  # each validation improves: a new best, the previous one goes
            t0 = time.perf_counter()
            save(io, checkpoint_dict(model, optimizer, step), folder, step, previous)
            previous = folder / f"best-step{step}.ckpt"
            if args.device == "cuda":
                torch.cuda.synchronize()
            stalls.append(time.perf_counter() - t0)
    io.wait()  # every checkpoint on disk before the round ends: its cost is in the wall time
    wall = time.perf_counter() - start
    disk = sum(os.stat(p).st_size for p in {os.stat(p).st_ino: p for p in folder.glob("*.ckpt")}.values())
    return stalls, wall, disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per round")
    parser.add_argument("--every", type=int, default=2, help="a validation (best + last) every N steps")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dir", default=None, help="where checkpoints go (default: a temporary folder)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=args.vocab, context_length=args.seq, n_embd=args.n_embd, n_layers=args.n_layers,
                          n_heads=args.n_heads)).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_checkpoint."))
    print(f"{model.num_params() / 1e6:.1f}M parameters, {args.steps} steps per round, a checkpoint every "
          f"{args.every}, {args.rounds} interleaved rounds per mode, {args.device}, checkpoints in {root}", flush=True)
    results: dict[str, dict[str, list]] = {m: {"stall": [], "wall": [], "disk": []} for m in ("before", "after")}
    try:
        run_round("after", args, model, optimizer, root / "warmup")  # allocator, page cache, optimizer state
        for r in range(args.rounds):
            for mode in ("before", "after"):
                folder = root / f"{mode}{r}"
                folder.mkdir(parents=True)
                stalls, wall, disk = run_round(mode, args, model, optimizer, folder)
                results[mode]["stall"] += stalls
                results[mode]["wall"].append(wall)
                results[mode]["disk"].append(disk)
                print(f"  round {r + 1} {mode:>6}: stalls {', '.join(f'{x:.2f}' for x in stalls)} s, wall {wall:.1f} s",
                      flush=True)
                shutil.rmtree(folder)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    med = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in results.items()}
    for mode, label in (("before", "two full sync writes"), ("after", "async + link")):
        m = med[mode]
        print(f"{mode:>6} ({label}): stall per checkpoint {m['stall']:.3f} s, round wall {m['wall']:.2f} s, "
              f"disk {m['disk'] / 2**20:.0f} MiB")
    print(f"round wall after/before: {med['after']['wall'] / med['before']['wall']:.2f}")
    print(f"disk after/before: {med['after']['disk'] / med['before']['disk']:.2f}")
    print(f"stall per checkpoint before/after: {med['before']['stall'] / med['after']['stall']:.1f}x")


if __name__ == "__main__":
    main()
