# adaptrail: `make run` and `make test` do all set-up on a fresh machine (a local .venv, installed on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The CPU wheel of torch 2.13.0 installs offline where a local wheel is offered; elsewhere PyPI's default build.
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/default.yaml
PYTEST_ARGS ?=

.PHONY: install run test test-fast ui example-data bench clean-state

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## run the main flow (train_adapter) on the default config and the embedded example data
run: $(STAMP)  ## first time: `adaptrail init` sets up the keys and the signed policy
	$(BIN)/adaptrail init
	$(BIN)/adaptrail run --config $(CONFIG) $(ARGS)

## the whole suite: unit tests, whole-flow integration tests, real-data tests (skip when ../shared/data is absent)
test: $(STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

## unit tests only (a plain `pytest` runs the same)
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## regenerate the example data set (deterministic; the committed file must not change)
example-data: $(STAMP)
	$(BIN)/adaptrail example-data --out examples/support_tickets.csv

## MLflow UI on the project's state (http://127.0.0.1:5000)
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$$(realpath -m "$${ADAPTRAIL_HOME:-.adaptrail}")/mlflow.db}" --host 127.0.0.1 --port 5000

## benchmarks (on demand): an audit over 1,000 seeded versions; training speed and memory (needs ../shared/data)
bench: $(STAMP)
	$(BIN)/python bench/audit_1000.py
	$(BIN)/python bench/train_speed.py $(BENCH_ARGS)
	$(BIN)/python bench/pipeline_overhead.py

clean-state:
	rm -rf .adaptrail
