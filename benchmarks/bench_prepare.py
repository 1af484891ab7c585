"""Corpus preparation: ours (``gpt_lightning.data.prepare``) against a build-nanogpt-style reference.

The reference is written the way build-nanogpt's ``fineweb.py`` is: the parent process reads
the documents and hands them to a ``multiprocessing.Pool`` (``pool.imap(tokenize, docs,
chunksize=16)``), each document tokenized with tiktoken's ``encode_ordinary`` after an
``<|endoftext|>``, converted to a uint16 numpy array, and copied into 100M-token shard
buffers written with ``np.save``. Both use one process per core (``--workers``, default
every core) on the same files.

The corpus is made here, in /tmp, from ../shared/data/tinyshakespeare.txt: documents of
about 3,000 characters (whole paragraphs, each copy of the text starting at another
paragraph so documents differ), half of the files JSON Lines and half parquet (row groups of
1,000 documents), then deleted at the end. Runs alternate (ours, reference, reference, ours,
...), each in a fresh process; the peak memory is the sum of the resident sets of the process
and its children (PSS: pages shared by forked workers count once), sampled every 50 ms;
the CPU seconds are those of the run and the pool it waited for (tokens per CPU second is the
figure a machine shared with other jobs distorts least). Our ids are checked to be the reference's (its stream
starts each document with EOT, ours ends each with it: ours == reference[1:] + [EOT]).

    python benchmarks/bench_prepare.py --gb 0.25
    python benchmarks/bench_prepare.py --gb 1 --rounds 1

The last line is the ratio of tokens/s, ours / reference (median of the paired rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EOT = 50256
SHARD = 100_000_000


# ---- the corpus -----------------------------------------------------------------------------------
def make_corpus(folder: Path, gb: float, files: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = (SHARED / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    paras = [p + "\n\n" for p in text.split("\n\n")]
    per_file = int(gb * 1e9 / files)
    shift, n_docs = 0, 0
    for i in range(files):
        docs, size, cur = [], 0, ""
        while size < per_file:
            for p in paras[shift:] + paras[:shift]:
                cur += p
                if len(cur) > 3000:
                    docs.append(cur)
                    size += len(cur)
                    cur = ""
                    if size >= per_file:
                        break
            shift = (shift + 97) % len(paras)
        n_docs += len(docs)
        if i % 2 == 0:
            with open(folder / f"part_{i:03d}.jsonl", "w", encoding="utf-8") as fh:
                for d in docs:
                    fh.write(json.dumps({"text": d}) + "\n")
        else:
            pq.write_table(pa.table({"text": docs}), folder / f"part_{i:03d}.parquet", row_group_size=1000)
    return n_docs


# ---- the two implementations, each run in a fresh process ---------------------------------------
def read_docs(folder: Path):
    """The reference's document reader (the parent process reads, as load_dataset's iterator does)."""
    import pyarrow.parquet as pq

    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl":
            with open(path, "rb") as fh:
                for line in fh:
                    yield json.loads(line)["text"]
        elif path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"]):
                yield from batch.column(0).to_pylist()


_enc = None


def ref_tokenize(doc: str):
    """build-nanogpt fineweb.py's tokenize()."""
    import numpy as np
    import tiktoken

    global _enc
    if _enc is None:
        _enc = tiktoken.get_encoding("gpt2")
    tokens = [_enc._special_tokens["<|endoftext|>"]]
    tokens.extend(_enc.encode_ordinary(doc))
    tokens_np = np.array(tokens)
    assert (0 <= tokens_np).all() and (tokens_np < 2**16).all(), "token dictionary too large for uint16"
    return tokens_np.astype(np.uint16)


def run_reference(folder: Path, out: Path, workers: int) -> int:
    """build-nanogpt fineweb.py's main loop (shards of SHARD tokens, np.save)."""
    import multiprocessing as mp

    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    total = 0
    with mp.Pool(workers) as pool:
        shard_index = 0
        all_tokens_np = np.empty((SHARD,), dtype=np.uint16)
        token_count = 0
        for tokens in pool.imap(ref_tokenize, read_docs(folder), chunksize=16):
            total += len(tokens)
            if token_count + len(tokens) < SHARD:
                all_tokens_np[token_count:token_count + len(tokens)] = tokens
                token_count += len(tokens)
            else:
                remainder = SHARD - token_count
                all_tokens_np[token_count:token_count + remainder] = tokens[:remainder]
                np.save(out / f"shard_{shard_index:06d}", all_tokens_np)
                shard_index += 1
                all_tokens_np[0:len(tokens) - remainder] = tokens[remainder:]
                token_count = len(tokens) - remainder
        if token_count != 0:
            np.save(out / f"shard_{shard_index:06d}", all_tokens_np[:token_count])
    return total


def run_ours(folder: Path, out: Path, workers: int) -> int:
    sys.path.insert(0, str(ROOT))
    from gpt_lightning.data.prepare import prepare

    _, manifest = prepare(cache=out, path=str(folder), shard_tokens=SHARD, val_split="tail", workers=workers,
                          progress=False)
    return manifest["totals"]["train_tokens"]


# ---- measuring ----------------------------------------------------------------------------------------
def tree_pss(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants (shared pages of forked workers
    counted once in total, not once per process as a sum of RSS would)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
        todo.extend(children.get(p, []))
    return total


def timed(which: str, folder: Path, out: Path, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--run", which, "--folder", str(folder), "--out", str(out),
           "--workers", str(workers)]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run and the pool it waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode:
        raise SystemExit(f"{which} failed ({proc.returncode})")
    tokens = int(proc.stdout.read().strip().splitlines()[-1])
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "peak_rss": peak,
            "cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu}


def _blocks(parts, skip: int, size: int = 1 << 24):
    """The concatenation of ``parts`` without its first ``skip`` ids, in blocks of ``size``."""
    import numpy as np

    buf = []
    have = 0
    for part in parts:
        for i in range(0, len(part), size):
            piece = np.asarray(part[i:i + size])
            if skip:
                cut = min(skip, len(piece))
                piece, skip = piece[cut:], skip - cut
            buf.append(piece)
            have += len(piece)
            while have >= size:
                joined = np.concatenate(buf)
                yield joined[:size]
                buf, have = [joined[size:]], have - size
    if have:
        yield np.concatenate(buf)


def same_ids(ours_dir: Path, ref_dir: Path) -> bool:
    """ours == reference[1:] + [EOT], compared in blocks (memory stays flat)."""
    import numpy as np

    folder = next(ours_dir.glob("corpora/*"))
    manifest = json.loads((folder / "manifest.json").read_text())
    ours = [np.memmap(folder / e["file"], dtype=np.uint16, mode="r") for e in manifest["train"]]
    ref = [np.load(p, mmap_mode="r") for p in sorted(ref_dir.glob("shard_*.npy"))]
    if sum(map(len, ours)) != sum(map(len, ref)) or ref[0][0] != EOT or ours[-1][-1] != EOT:
        return False
    for x, y in zip(_blocks(ours, 0), _blocks(ref, 1)):  # the reference's last block is one id shorter
        if not np.array_equal(x[:len(y)], y):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=0.25, help="corpus size in GB of text")
    ap.add_argument("--files", type=int, default=None, help="files (default: 50 per GB, at least 4)")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs (ours+reference, then reference+ours ...)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--run", choices=["ours", "reference"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    if args.run:
        fn = run_ours if args.run == "ours" else run_reference
        print(fn(Path(args.folder), Path(args.out), args.workers), flush=True)
        return

    work = Path(tempfile.mkdtemp(prefix="bench_prepare_", dir="/tmp"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        files = args.files or max(4, round(50 * args.gb))
        t = time.perf_counter()
        n_docs = make_corpus(corpus, args.gb, files)
        size = sum(p.stat().st_size for p in corpus.iterdir())
        print(f"corpus: {size / 1e9:.2f} GB on disk, {files} files (jsonl + parquet), {n_docs:,} documents, "
              f"made in {time.perf_counter() - t:.0f} s; {args.workers} worker processes each; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        results = {"ours": [], "reference": []}
        for r in range(args.rounds):
            order = ["ours", "reference"] if r % 2 == 0 else ["reference", "ours"]
            for which in order:
                out = work / f"{which}_{r}"
                res = timed(which, corpus, out, args.workers)
                results[which].append(res)
                print(f"round {r + 1} {which:9s}: {res['tokens']:,} tokens in {res['seconds']:.1f} s = "
                      f"{res['tokens_per_s'] / 1e6:.2f}M tokens/s, {res['cpu_s']:.0f} CPU s "
                      f"({res['tokens_per_cpu_s'] / 1e6:.2f}M tokens per CPU s), peak memory (PSS) "
                      f"{res['peak_rss'] / 2**20:.0f} MiB "
                      f"(load average {os.getloadavg()[0]:.1f})", flush=True)
            if r == 0:
                print(f"identical ids (ours == reference[1:] + [EOT]): "
                      f"{same_ids(work / 'ours_0', work / 'reference_0')}", flush=True)
            for which in order:
                shutil.rmtree(work / f"{which}_{r}", ignore_errors=True)
        ratios = [o["tokens_per_s"] / f["tokens_per_s"] for o, f in zip(results["ours"], results["reference"])]
        for which in ("ours", "reference"):
            runs = results[which]
            print(f"{which:9s}: median {statistics.median(r['tokens_per_s'] for r in runs) / 1e6:.2f}M tokens/s, "
                  f"{statistics.median(r['tokens_per_cpu_s'] for r in runs) / 1e6:.2f}M tokens per CPU s, "
                  f"peak memory (PSS) max {max(r['peak_rss'] for r in runs) / 2**20:.0f} MiB")
        cpu_ratios = [o["tokens_per_cpu_s"] / f["tokens_per_cpu_s"] for o, f in zip(results["ours"], results["reference"])]
        print(f"ratio tokens per CPU second ours / reference (median of {len(cpu_ratios)} pairs): "
              f"{statistics.median(cpu_ratios):.2f}")
        print(f"ratio tokens/s ours / reference (median of {len(ratios)} pairs, {args.gb:g} GB, "
              f"{args.workers} workers): {statistics.median(ratios):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
