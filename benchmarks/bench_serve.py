"""serve.py under load: continuous batching against the same server serving one request at a time.

Two servers run the same model (random weights of the chosen shape, ``init=scratch``, the
same seed): ``batched`` (max_batch_size=16, continuous batching) and ``one-at-a-time``
(max_batch_size=1: each request runs alone while the others queue, the way a plain
generation pipeline behind a web framework serves them). For 1, 4 and 16 concurrent
streaming clients, both servers get the same requests (prompts of --prompt-tokens token ids,
--new-tokens new tokens each, sampled with a seed per request); we measure total new
tokens/s over the wall time of the whole set, and the time to first token (p50/p95) seen by
the clients. Servers take turns within every repeat (order alternating), medians are
printed, and the paired ratios batched / one-at-a-time come last.

    python benchmarks/bench_serve.py                          # 124M shape, 16 requests x (32 + 64 tokens)
    python benchmarks/bench_serve.py --size gpt2_mini --repeats 5

Before / after a change: ``--baseline DIR`` adds a ``before`` server run from another checkout
(``git worktree add /tmp/before <commit>``) with the same max_batch_size, and the ratios are
then taken against it; ``--int8`` adds a server with ``quantize=int8``; ``--no-solo`` drops
the one-at-a-time server:

    python benchmarks/bench_serve.py --size gpt2_tiny --baseline /tmp/before --int8 --no-solo \
        --concurrency 1 4 16 64 --requests 64 --max-batch-size 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_small", help="model shape (conf/model/<size>.yaml), random weights")
    p.add_argument("--requests", type=int, default=16, help="requests per measurement")
    p.add_argument("--prompt-tokens", type=int, default=32, help="prompt length of each request")
    p.add_argument("--new-tokens", type=int, default=64, help="max_tokens of each request")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="concurrent client streams")
    p.add_argument("--repeats", type=int, default=3, help="measurements per server and concurrency")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each server")
    p.add_argument("--max-batch-size", type=int, default=16, help="max_batch_size of the batched servers")
    p.add_argument("--baseline", default=None, help="a checkout of the code before a change: adds server 'before'")
    p.add_argument("--int8", action="store_true", help="add a batched server with quantize=int8")
    p.add_argument("--no-solo", action="store_true", help="leave out the one-at-a-time server")
    return p.parse_args()


def server_specs(args) -> dict[str, tuple[Path, int, list[str]]]:
    """name -> (checkout it runs from, max_batch_size, extra overrides); the first is the reference."""
    specs = {}
    if args.baseline:
        specs["before"] = (Path(args.baseline).resolve(), args.max_batch_size, [])
    elif not args.no_solo:
        specs["one-at-a-time"] = (ROOT, 1, [])
    specs["batched"] = (ROOT, args.max_batch_size, [])
    if args.int8:
        specs["batched int8"] = (ROOT, args.max_batch_size, ["quantize=int8"])
    if args.baseline and not args.no_solo:
        specs["one-at-a-time"] = (ROOT, 1, [])
    return specs


def start_server(name: str, root: Path, batch: int, extra: list[str], args) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, str(root / "serve.py"), "init=scratch", f"model={args.size}", "device=cpu", "port=0",
         f"max_batch_size={batch}", "queue_size=256", "log_level=warning", f"model_name={name.replace(' ', '_')}",
         *extra],
        cwd=root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    found = re.search(r"at (http://[\d.]+:\d+) ", line)
    if not found:
        proc.kill()
        raise SystemExit(f"{name} server did not start: {line}{proc.stderr.read()}")
    url = found.group(1)
    for _ in range(1200):  # the weights load after the port is bound
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"{name} server did not answer /health")


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float, int]:
    """(seconds to the first text, new tokens) of one streamed completion."""
    start, first, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event["choices"] and event["choices"][0]["text"] and first is None:
                first = time.perf_counter() - start
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return first if first is not None else time.perf_counter() - start, tokens


async def measure(url: str, bodies: list[dict], concurrency: int) -> dict:
    """All ``bodies`` from ``concurrency`` clients (each takes the next when done)."""
    queue = list(reversed(bodies))
    ttfts, tokens = [], 0

    async def client_loop(client):
        nonlocal tokens
        while queue:
            ttft, n = await one_request(client, url, queue.pop())
            ttfts.append(ttft)
            tokens += n

    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ttfts.sort()
    return {"tokens_per_s": tokens / seconds, "p50": _quantile(ttfts, 0.5), "p95": _quantile(ttfts, 0.95),
            "tokens": tokens}


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main() -> None:
    args = parse_args()
    rng = random.Random(0)
    bodies = [{"prompt": [rng.randrange(50256) for _ in range(args.prompt_tokens)], "max_tokens": args.new_tokens,
               "temperature": 0.8, "top_k": 50, "seed": i, "stream": True, "stream_options": {"include_usage": True}}
              for i in range(args.requests)]
    print(f"{args.size} (random weights), {args.requests} requests x ({args.prompt_tokens} prompt + "
          f"{args.new_tokens} new tokens), {args.threads} torch threads, {os.cpu_count()} CPUs", flush=True)
    SERVERS = server_specs(args)
    print("servers: " + "; ".join(f"{n} (max_batch_size={b}{', ' + ' '.join(e) if e else ''}"
                                  f"{', from ' + str(r) if r != ROOT else ''})" for n, (r, b, e) in SERVERS.items()),
          flush=True)
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    servers = {name: start_server(name, *spec, args) for name, spec in SERVERS.items()}
    results = {(name, c): [] for name in SERVERS for c in args.concurrency}
    try:
        for name, (_, url) in servers.items():  # warm-up: first calls allocate caches and kernels
            asyncio.run(measure(url, bodies[:2], 2))
        for repeat in range(args.repeats):
            for c in args.concurrency:
                order = list(SERVERS)[repeat % len(SERVERS):] + list(SERVERS)[:repeat % len(SERVERS)]
                for name in order:
                    r = asyncio.run(measure(servers[name][1], bodies, c))
                    assert r["tokens"] == args.requests * args.new_tokens, r  # every request ran in full
                    results[name, c].append(r)
                    print(f"  repeat {repeat + 1} c={c:2d} {name:14s} {r['tokens_per_s']:7.1f} tokens/s  "
                          f"TTFT p50 {r['p50']:.2f} s p95 {r['p95']:.2f} s  (load {os.getloadavg()[0]:.1f})",
                          flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)

    print("\nmedians over repeats")
    print(f"{'streams':>7} | {'server':14s} | {'new tokens/s':>12} | {'TTFT p50':>8} | {'TTFT p95':>8}")
    for c in args.concurrency:
        for name in SERVERS:
            runs = results[name, c]
            print(f"{c:7d} | {name:14s} | {statistics.median(r['tokens_per_s'] for r in runs):12.1f} | "
                  f"{statistics.median(r['p50'] for r in runs):7.2f}s | {statistics.median(r['p95'] for r in runs):7.2f}s")
    reference = next(iter(SERVERS))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name in list(SERVERS)[1:]:
        print(f"\nratios {name} / {reference} (median of paired runs; TTFT below 1 is faster)")
        for c in args.concurrency:
            pairs = list(zip(results[name, c], results[reference, c]))
            speed = statistics.median(b["tokens_per_s"] / s["tokens_per_s"] for b, s in pairs)
            p50 = statistics.median(b["p50"] / s["p50"] for b, s in pairs)
            p95 = statistics.median(b["p95"] / s["p95"] for b, s in pairs)
            print(f"{c:2d} streams: throughput x{speed:.2f}, TTFT p50 x{p50:.2f}, p95 x{p95:.2f}")


if __name__ == "__main__":
    main()
