# Set-up and the two commands the README promises: `make train` and `make test`.
PYTHON ?= python3
# torch is installed first and only when missing, so an existing CPU or CUDA build stays.
TORCH_SPEC ?= torch==2.13.0
SHARED := $(abspath ../shared)

# Offline assets for development machines and CI (see ../shared/README.md).
ifneq ($(wildcard $(SHARED)/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken_cache
endif
ifneq ($(wildcard $(SHARED)/data),)
export GPT_LIGHTNING_DATA_DIR ?= $(SHARED)/data
endif

.PHONY: install train test bench gpu-check
install: .make/installed

.make/installed: pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p .make && touch $@

train: install
	$(PYTHON) train.py $(ARGS)

test: install
	$(PYTHON) -m pytest -q $(ARGS)

bench: install
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_generate.py

# GPU tests and figures on a CUDA machine; says so and exits 0 where there is no GPU.
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh
