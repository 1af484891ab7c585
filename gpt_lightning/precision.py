"""What ``trainer.precision: null`` means on this machine.

bf16-mixed where the hardware multiplies bf16 natively: GPUs that support it, and CPUs
with AVX-512 BF16 or AMX-BF16 (where bf16 autocast trains GPT-2 shapes faster than fp32;
see docs/speed.md); 32-true everywhere else (older CPUs emulate bf16 and get slower,
Apple's MPS has no bf16 autocast in Lightning). The CPU's features come from
/proc/cpuinfo's flags, which Linux fills from CPUID; elsewhere none are known, so fp32.
The environment variable GPT_LIGHTNING_CPU_BF16=0 (or 1) overrides what the CPU reports
(the test suite sets 0, so its runs are fp32 on every machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of native bf16 arithmetic


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags Linux reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def choose_precision(accelerator: str = "auto", *, gpu: bool | None = None, gpu_bf16: bool | None = None,
                     flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(precision, why) for ``trainer.precision: null`` with ``trainer.accelerator``.

    ``gpu`` (a CUDA GPU is visible), ``gpu_bf16`` (it supports bf16) and ``flags`` (the
    CPU's feature flags) are read from this machine unless given (tests inject them).
    """
    gpu = torch.cuda.is_available() if gpu is None else gpu
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpu):
        if gpu_bf16 is None:
            gpu_bf16 = gpu and torch.cuda.is_bf16_supported()
        return ("bf16-mixed", "the GPU supports bf16") if gpu_bf16 else ("32-true", "the GPU has no bf16")
    if accelerator not in ("auto", "cpu"):
        return "32-true", f"accelerator={accelerator}"
    if flags is None:
        override = os.environ.get("GPT_LIGHTNING_CPU_BF16")
        flags = cpu_flags() if override is None else frozenset(CPU_BF16_FLAGS[:1] if override == "1" else ())
    native = [f for f in CPU_BF16_FLAGS if f in flags]
    if native:
        return "bf16-mixed", f"this CPU multiplies bf16 natively ({', '.join(native)})"
    return "32-true", "this CPU has no native bf16 (neither AVX-512 BF16 nor AMX)"
