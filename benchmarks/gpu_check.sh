#!/usr/bin/env bash
# One command for a CUDA machine: install from this repo, run the GPU tests, and print the GPU
# figures the README asks for (gpt2_small, 8 x 1024 tokens):
#   1. the test suite's GPU tests (pytest -m gpu; they skip without CUDA)
#   2. training tokens/s, MFU and peak memory for 32-true, bf16-mixed, bf16-mixed + compile
#      (bench_train.py: Lightning vs a plain PyTorch loop vs transformers on the same batches,
#      interleaved, ratios last), and the SDPA attention kernel the forward really ran
#   3. generation new tokens/s at batch 1, 8 and 32 against transformers (bench_generate.py, bf16)
# Without a CUDA GPU it says so and exits 0, having changed nothing.
#
#   bash benchmarks/gpu_check.sh                # everything (~10-15 min on an H100)
#   QUICK=1 bash benchmarks/gpu_check.sh        # fewer steps and repeats (~3 min)
#   PYTHON=python3.11 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

no_gpu() {
    echo "gpu_check: no CUDA GPU is present here ($1): nothing to measure, skipping."
    exit 0
}
[[ -e /dev/nvidiactl || -e /dev/nvidia0 ]] || no_gpu "no NVIDIA device in /dev"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || no_gpu "torch.cuda.is_available() is False, or torch is missing"

make install PYTHON="$PYTHON"  # the repo's own dependencies (Makefile; an installed torch stays)
"$PYTHON" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

if [[ -n "${QUICK:-}" ]]; then TRAIN=(--steps 10 --rounds 2); GEN=(--repeats 2 --new-tokens 64); else TRAIN=(); GEN=(--new-tokens 256); fi

echo; echo "== 1. GPU tests =="
"$PYTHON" -m pytest -q -m gpu

echo; echo "== 2. training: gpt2_small, 8 x 1024 tokens =="
for run in "--precision 32-true" "--precision bf16-mixed" "--precision bf16-mixed --compile"; do
    echo; echo "-- bench_train.py $run"
    # shellcheck disable=SC2086
    "$PYTHON" benchmarks/bench_train.py --device cuda --size gpt2_small --batch 8 --seq 1024 $run "${TRAIN[@]}"
done

echo; echo "== 3. generation: gpt2_small, bf16, batch 1 / 8 / 32 =="
"$PYTHON" benchmarks/bench_generate.py --device cuda --dtype bfloat16 --no-int8 --batch-sizes 1 8 32 "${GEN[@]}"
