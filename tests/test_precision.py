"""trainer.precision=null: bf16-mixed on GPUs and CPUs with native bf16, 32-true elsewhere.
The machine's capabilities are injected, so the test means the same on every CPU."""

import logging

import pytest

from gpt_lightning.config.schemas import resolve_precision
from gpt_lightning.precision import choose_precision, cpu_flags

AVX512 = frozenset({"avx2", "avx512f", "avx512bw"})


@pytest.mark.parametrize("accelerator, gpu, gpu_bf16, flags, expected", [
    ("auto", False, None, AVX512 | {"avx512_bf16"}, "bf16-mixed"),  # AMD Zen 4, Intel Cooper Lake
    ("cpu", False, None, AVX512 | {"amx_bf16", "amx_tile"}, "bf16-mixed"),  # Intel Sapphire Rapids
    ("auto", False, None, AVX512, "32-true"),  # AVX-512 without BF16: bf16 would be emulated
    ("cpu", True, True, frozenset({"avx2"}), "32-true"),  # a CPU run on a GPU machine follows the CPU
    ("cpu", True, True, frozenset({"avx512_bf16"}), "bf16-mixed"),
    ("auto", True, True, frozenset(), "bf16-mixed"),  # GPUs as before
    ("gpu", True, False, frozenset({"avx512_bf16"}), "32-true"),  # a GPU without bf16 (V100, T4)
    ("mps", False, None, frozenset({"avx512_bf16"}), "32-true"),
])
def test_choice_follows_the_injected_hardware(accelerator, gpu, gpu_bf16, flags, expected):
    chosen, why = choose_precision(accelerator, gpu=gpu, gpu_bf16=gpu_bf16, flags=flags)
    assert chosen == expected and why


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_null_is_resolved_and_printed_an_explicit_value_is_kept(monkeypatch, caplog):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setenv("GPT_LIGHTNING_CPU_BF16", "1")
    with caplog.at_level(logging.INFO, logger="gpt_lightning"):
        assert resolve_precision(None, "auto") == "bf16-mixed"
    assert "trainer.precision=null -> bf16-mixed" in caplog.text
    monkeypatch.setenv("GPT_LIGHTNING_CPU_BF16", "0")
    assert resolve_precision(None, "cpu") == "32-true"
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"
