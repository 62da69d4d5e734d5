# ramie developer commands. Every target creates .venv from nothing when it is
# missing, so `make demo` and `make test` work on a fresh clone with only
# Python 3.11 and pip installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
PIPFLAGS := -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-all bench lint clean conformance guides flax-examples

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --upgrade pip

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install $(PIPFLAGS) -e ".[dev]"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/python -m ramie.demo

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n 2 -q

test-all: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n 2 -q -m ""

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/graph_ops.py
	$(BIN)/python benchmarks/jit_overhead.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/checkpoint.py

# Flax NNX's own test suite (core tier), its guides and its example programs, run
# against ramie. They download the Flax source release once and are not part of
# `make test`.
conformance: $(VENV)/.dev-installed
	$(PIP) install $(PIPFLAGS) pytest-timeout cloudpickle absl-py
	$(BIN)/python tools/flaxcompat/suite.py --tier core

guides: $(VENV)/.dev-installed
	$(BIN)/python tools/flaxcompat/guides.py

flax-examples: $(VENV)/.dev-installed
	$(PIP) install $(PIPFLAGS) absl-py sentencepiece
	$(BIN)/python tools/flaxcompat/examples.py

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests benchmarks examples docs tools

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
