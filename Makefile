# One command to set up and run the demo, one to set up and run the tests.
#   make demo   -> .venv with CPU PyTorch + mrl, then `mrl demo` (offline, ~5-10 min on 2 cores)
#   make test   -> the same plus test extras, then the default (fast) test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup setup-test demo test test-slow lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.setup: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.setup
setup-test: $(VENV)/.setup-test

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/mrl demo --output demo-out

test: setup-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-slow: setup-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

lint: setup-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-out runs
