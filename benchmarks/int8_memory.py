"""Peak resident memory of `generate.py quantize=int8` on a GPT-2 XL-shaped checkpoint.

Writes random weights in the GPT-2 XL shape (1558M parameters, 6.2 GB of fp32) to a
temporary folder in the released checkpoint's safetensors layout, one tensor at a time
(so writing needs ~0.3 GB, not 6 GB), then runs generate.py on it as a user would
(init=checkpoint, quantize=int8, a few greedy tokens) and reports the child's peak RSS
(getrusage ru_maxrss). The folder is deleted afterwards. Needs ~6.5 GB of free disk.

    python benchmarks/int8_memory.py                 # XL, int8 (target: < 2.5 GB)
    python benchmarks/int8_memory.py --fp32          # the same without quantize, for comparison
    python benchmarks/int8_memory.py --size gpt2_small --dir /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpt_lightning import SIZES, GPTConfig  # noqa: E402
from gpt_lightning.weights.hf_io import _expected_shapes, _name_pairs, config_to_hf  # noqa: E402


def write_checkpoint(folder: Path, cfg: GPTConfig, seed: int = 0) -> int:
    """Random GPT-2-layout model.safetensors + config.json, streamed tensor by tensor; returns bytes."""
    shapes = _expected_shapes(cfg)
    entries, offset = [], 0
    for ours, (theirs, transposed) in _name_pairs(cfg):
        shape = shapes[ours][::-1] if transposed else shapes[ours]
        size = 4 * int(torch.Size(shape).numel())
        entries.append(("transformer." + theirs, ours, shape, offset, offset + size))
        offset += size
    header = {name: {"dtype": "F32", "shape": list(shape), "data_offsets": [a, b]}
              for name, _, shape, a, b in entries}
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, ours, shape, _, _ in entries:
            if ours.endswith("ln_1.weight") or ours.endswith("ln_2.weight") or ours == "ln_f.weight":
                t = torch.ones(shape)
            elif ours.endswith(".bias"):
                t = torch.zeros(shape)
            else:
                t = torch.randn(shape, generator=g) * 0.02
            f.write(t.numpy().tobytes())
    (folder / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2))
    return offset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="gpt2_xl", choices=sorted(SIZES))
    p.add_argument("--dir", default=None, help="where to write the temporary checkpoint (default: $TMPDIR)")
    p.add_argument("--fp32", action="store_true", help="run without quantize=int8 (needs ~7 GB of RAM for XL)")
    args = p.parse_args()
    cfg = GPTConfig.from_name(args.size)
    folder = Path(tempfile.mkdtemp(prefix="int8_memory_", dir=args.dir))
    try:
        free = shutil.disk_usage(folder).free
        start = time.perf_counter()
        size = write_checkpoint(folder, cfg)
        print(f"{args.size}: wrote {size / 1e9:.2f} GB of random fp32 weights to {folder} "
              f"in {time.perf_counter() - start:.0f} s (free disk was {free / 1e9:.0f} GB)", flush=True)
        command = [sys.executable, str(ROOT / "generate.py"), "init=checkpoint", f"init.path={folder}",
                   "device=cpu", "prompt=Every effort moves you", "temperature=0", "max_new_tokens=4"]
        if not args.fp32:
            command.append("quantize=int8")
        start = time.perf_counter()
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"generate.py failed ({result.returncode}):\n{result.stderr}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
        mode = "fp32" if args.fp32 else "quantize=int8"
        print(f"generate.py {mode}: loaded and generated 4 tokens in {seconds:.0f} s; "
              f"peak resident memory {peak / 2**30:.2f} GiB ({peak / 1e9:.2f} GB)")
        print(f"  stderr: {result.stderr.strip().splitlines()[-1]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
