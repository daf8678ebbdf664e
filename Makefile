# Two entry points for a new user (see README):
#   make repro   set up .venv if needed, then run the whole DVC pipeline on the default data
#   make test    set up .venv if needed, then run the test suite
# Everything else is plain `dvc` / `pytest` inside .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch where a local wheel exists (this project's CI machines); any torch >= 2.4 works.
TORCH_SPEC ?= torch==2.13.0
# Where pip looks for torch (empty: pip's configured indexes). For NVIDIA GPUs use PyTorch's
# CUDA wheels, e.g. make setup TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (docs/recipes.md, "Installing CUDA torch").
TORCH_INDEX ?=

# The test suite runs on one pytest-xdist worker per core (at most 4), each test file on one
# worker so that its module fixtures are built once, long files first; tests/conftest.py splits
# the threads and orders the files.
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder

export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup repro test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# DVC needs a git repository and an initialised .dvc folder; both exist in a clone.
# Ends with the round table, the report's path and how to open MLflow on the runs.
repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m leod compare --next-steps

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(XDIST)

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(XDIST) -m "not slow"

lint: setup
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_histogram.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
