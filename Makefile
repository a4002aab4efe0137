# The one entry point for developers and CI. `make install` then `make check`.
# `make install` is the developer install: every extra plus test and lint tools (torch
# included). Users install one role instead: README, "Install".
# CPU-only machine: `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# takes torch's CPU wheels (no CUDA libraries).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_INDEX ?=

.PHONY: install lint test check serve bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]' $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(BIN)/pip install --no-deps -e tests/fault_engine  # TEST-ONLY engine plug-in

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test:
	$(BIN)/pytest -q --durations=15

check: lint test

serve:
	$(BIN)/resnet-serve serve

bench:
	$(BIN)/python -m benchmarks.bench_service

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache test-artifacts
