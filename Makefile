# Every target sets itself up on a fresh machine: it creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-all lint typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# PyTorch first, pinned: its CPU wheel lies on local disk on our machines (see README).
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.4"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cryptonorm run configs/quickstart.yaml

# Test tiers: `make test` is the fast tier (lint, types, the import contract and every test not marked
# `slow`: under 8 minutes on 2 cores); `make test-slow` runs only the slow ones (Ray clusters, random kills,
# the browser, fuzzing, long trainings); `make test-all` runs everything. `.ci/run` runs test then test-slow.
test: $(STAMP)
	$(BIN)/ruff check cryptonorm tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-all: $(STAMP)
	$(BIN)/ruff check cryptonorm tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check cryptonorm tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Benchmarks print figures (never assertions). Quick settings for a laptop; see each file's --help.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py --mem-rows 1000000
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_vol.py
	$(BIN)/python benchmarks/bench_training.py --quick
	$(BIN)/python benchmarks/bench_norms.py --kinds mlp
	$(BIN)/python benchmarks/bench_fetch_soak.py --years 0.5
	$(BIN)/python benchmarks/bench_reports.py --repeat 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
