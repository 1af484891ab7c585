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

.PHONY: install train test docs bench browser gpu-check
install: .make/installed

# The chat page's browser test needs Debian's headless Chromium. Installed only when missing,
# as root with apt-get; anything else (no root, no apt, offline) leaves the test to skip, saying why.
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver for the chat page test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "could not install chromium; the browser test will be skipped"; \
	fi

.make/installed: pyproject.toml
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@mkdir -p .make && touch $@

train: install
	$(PYTHON) train.py $(ARGS)

test: install browser
	$(PYTHON) -m pytest -q $(ARGS)

# The documentation site (docs/, mkdocs-material) into site/; the tests build it with --strict.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

bench: install
	$(PYTHON) benchmarks/bench_train.py
	$(PYTHON) benchmarks/bench_generate.py
	$(PYTHON) benchmarks/bench_serve.py
	$(PYTHON) benchmarks/bench_evaluate.py

# GPU tests and figures on a CUDA machine; says so and exits 0 where there is no GPU.
gpu-check:
	PYTHON=$(PYTHON) bash benchmarks/gpu_check.sh
