"""Data loader throughput from shards (data=corpus) against today's single-file loader (data=text).

Both read the same ids: the shards are prepared from a corpus made here (Tiny Shakespeare
repeated, as JSON Lines, in /tmp, deleted at the end) and the single file is their
concatenation. Ours: ``ShardWindows`` (windows across shards, memory-mapped lazily per worker)
with the lazy ``PermutedSampler``; the peer: ``SlidingWindowDataset`` with ``ResumableSampler``
(``torch.randperm(n).tolist()``). Batches of 16 x 1024 windows (what one rank consumes per
micro-batch training GPT-2 124M), with 0 and 2 DataLoader workers, alternating runs.
One H100 training GPT-2 124M consumes ~0.5M tokens/s; the loader must exceed that widely.

    python benchmarks/bench_loader.py

The last line is the ratio of tokens/s, ours / today's, with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken_cache"))

from torch.utils.data import DataLoader  # noqa: E402

from gpt_lightning.data.corpus import ShardWindows  # noqa: E402
from gpt_lightning.data.permutation import PermutedSampler  # noqa: E402
from gpt_lightning.data.prepare import prepare  # noqa: E402
from gpt_lightning.data.pretrain import SlidingWindowDataset  # noqa: E402
from gpt_lightning.data.sampler import ResumableSampler  # noqa: E402
from gpt_lightning.data.shards import TokenStream  # noqa: E402


def loader(dataset, sampler, batch: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                      persistent_workers=False)


def tokens_per_s(make, batches: int, batch: int, length: int) -> float:
    it = iter(make())
    next(it)  # workers started, first batch out
    start = time.perf_counter()
    for _ in range(batches):
        b = next(it)
        assert b["input_ids"].shape == (batch, length)
    return batches * batch * length / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=40, help="corpus text in MB")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    batch, length = 16, 1024
    work = Path(tempfile.mkdtemp(prefix="bench_loader_", dir="/tmp"))
    try:
        text = (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
        docs = [text[i:i + 3000] for i in range(0, len(text), 3000)]
        with open(work / "corpus.jsonl", "w") as fh:
            for _ in range(int(args.mb * 1e6 / len(text)) + 1):
                for d in docs:
                    fh.write(json.dumps({"text": d}) + "\n")
        folder, manifest = prepare(cache=work / "cache", path=str(work / "corpus.jsonl"), shard_tokens=4_000_000,
                                   val_split="tail", progress=False)
        stream = TokenStream(folder, manifest["train"])
        single = work / "single.bin"
        stream.read(0, len(stream)).tofile(single)
        n = len(stream)
        ours_set = ShardWindows(stream, 0, n, length, length)
        peer_set = SlidingWindowDataset(single, 0, n, length, length)
        print(f"{n:,} tokens in {len(manifest['train'])} shards, {len(ours_set):,} windows of {length}; batch "
              f"{batch} x {length}; load average {os.getloadavg()[0]:.1f}", flush=True)
        results: dict[tuple, list[float]] = {}
        for r in range(args.rounds):
            for workers in (0, 2):
                pair = [("ours (shards)", ours_set, PermutedSampler), ("today (one file)", peer_set, ResumableSampler)]
                for name, ds, sampler_cls in (pair if r % 2 == 0 else pair[::-1]):
                    def make(ds=ds, sampler_cls=sampler_cls, workers=workers):
                        return loader(ds, sampler_cls(len(ds), shuffle=True, seed=r), batch, workers)

                    tps = tokens_per_s(make, args.batches, batch, length)
                    results.setdefault((name, workers), []).append(tps)
                    print(f"round {r + 1} {name:17s} workers={workers}: {tps / 1e6:.2f}M tokens/s", flush=True)
        for (name, workers), values in results.items():
            print(f"{name:17s} workers={workers}: median {statistics.median(values) / 1e6:.2f}M tokens/s "
                  f"({statistics.median(values) / 0.5e6:.0f}x what one H100 consumes training 124M, ~0.5M tokens/s)")
        for workers in (0, 2):
            ratio = statistics.median(results[("ours (shards)", workers)]) / statistics.median(
                results[("today (one file)", workers)])
            print(f"ratio tokens/s ours / today's loader, workers={workers}: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
