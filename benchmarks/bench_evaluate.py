"""HellaSwag-format items/s: our batched scorer vs a plain one-item-at-a-time loop with
transformers' GPT2LMHeadModel, on the same random weights.

    ours  the library path evaluate.py takes (gpt_lightning.evaluate.hellaswag): items
          sorted by length, --batch-size endings per forward, right-padded, the output
          layer only where an ending token is predicted
    hf    the loop most scripts use (nanoGPT / llm.c's hellaswag.py): per item, its 4
          endings padded into one batch, full logits, cross-entropy under a mask

Items are HellaSwag-shaped (a context and 4 endings of 1 sentence each) cut from The
Verdict, or the real file with --hellaswag. Engines take turns in every repeat (rotating
order); medians of items/s are reported, the ratio last. Both must pick the same endings.

    python benchmarks/bench_evaluate.py                        # 124M shape, CPU
    python benchmarks/bench_evaluate.py --size gpt2_mini --items 64
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt_lightning.weights.hf_io import save_pretrained
from gpt_lightning import GPT, SIZES, GPTConfig  # noqa: E402
from gpt_lightning.download import fetch_dataset  # noqa: E402
from gpt_lightning.evaluate.hellaswag import HellaSwag, load_records  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_small", choices=sorted(SIZES), help="model shape (random weights)")
    p.add_argument("--items", type=int, default=32, help="items scored per run")
    p.add_argument("--batch-size", type=int, default=32, help="our endings per forward")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine")
    p.add_argument("--hellaswag", default=None, help="a hellaswag_val.jsonl to take the items from")
    return p.parse_args()


def verdict_items(n: int) -> list[dict]:
    text = fetch_dataset("the-verdict.txt").read_text(encoding="utf-8")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if len(s.split()) >= 4]
    return [{"ind": i, "ctx": sentences[i], "endings": sentences[i + 1:i + 5], "label": 0} for i in range(n)]


def run_ours(model, items, batch_size):
    rows = TASK.run(model, items, batch_size=batch_size, progress=lambda n: None)
    return [(r["pred"], r["pred_norm"], r["logprob"]) for r in rows]


@torch.inference_mode()
def run_hf(model, items, batch_size):
    out = []
    for item in items:
        ctx, endings = item["ctx_ids"], item["ending_ids"]
        length = max(len(ctx) + len(e) for e in endings)
        tokens = torch.zeros(4, length, dtype=torch.long)
        mask = torch.zeros(4, length)
        for i, e in enumerate(endings):
            tokens[i, :len(ctx) + len(e)] = torch.tensor(ctx + e)
            mask[i, len(ctx):len(ctx) + len(e)] = 1
        logits = model(tokens).logits[:, :-1]
        losses = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none").view(4, -1)
        sums = (losses * mask[:, 1:]).sum(1)
        means = sums / mask[:, 1:].sum(1)
        out.append((int(sums.argmin()), int(means.argmin()), (-sums).tolist()))
    return out


def main() -> None:
    global TASK
    args = parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    records = load_records(args.hellaswag, limit=args.items) if args.hellaswag else verdict_items(args.items)
    TASK = HellaSwag(records)
    torch.manual_seed(0)
    ours = GPT(GPTConfig.from_name(args.size)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(ours, tmp)
        hf = transformers.GPT2LMHeadModel.from_pretrained(tmp, attn_implementation="sdpa").eval()
    engines = {"ours": (run_ours, ours), "hf": (run_hf, hf)}
    tokens = sum(len(i["ctx_ids"]) + len(e) for i in TASK.items for e in i["ending_ids"])
    print(f"{args.size} ({ours.num_params() / 1e6:.0f}M, random weights) on cpu, float32, {torch.get_num_threads()} "
          f"threads; {len(TASK.items)} items ({tokens / len(TASK.items) / 4:.0f} tokens per ending row on average), "
          f"our batch {args.batch_size} endings, {args.repeats} interleaved repeats, medians", flush=True)
    warm = {name: fn(model, TASK.items[:4], args.batch_size) for name, (fn, model) in engines.items()}
    del warm
    rates: dict[str, list[float]] = {}
    results = {}
    names = list(engines)
    for r in range(args.repeats):
        for name in names[r % 2:] + names[:r % 2]:
            fn, model = engines[name]
            start = time.perf_counter()
            results[name] = fn(model, TASK.items, args.batch_size)
            rates.setdefault(name, []).append(len(TASK.items) / (time.perf_counter() - start))
            print(f"  repeat {r + 1} {name}: {rates[name][-1]:.2f} items/s", flush=True)
    same = all(a[:2] == b[:2] for a, b in zip(results["ours"], results["hf"]))
    diff = max(abs(x - y) for a, b in zip(results["ours"], results["hf"]) for x, y in zip(a[2], b[2]))
    print(f"same predictions (acc and acc_norm) for every item: {'yes' if same else 'NO'}; "
          f"largest log-prob difference {diff:.2e}")
    for name in names:
        runs = ", ".join(f"{x:.2f}" for x in rates[name])
        print(f"{name:<5} {statistics.median(rates[name]):7.2f} items/s  (runs: {runs})")
    print(f"ours/HF = {statistics.median(rates['ours']) / statistics.median(rates['hf']):.2f}x")


if __name__ == "__main__":
    main()
