# `make demo` and `make test` set everything up from a clean clone (Python 3.11+ and make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: setup demo test lint docs soak clean

setup: $(READY)

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,examples,objectstore]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" examples/thumbnails/demo.sh

lint: setup
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Bigger crash-loop rounds than CI runs: 20 rounds of 1,000 files, kill -9 each time.
soak: setup
	ONDROP_FAULT_ROUNDS=20 ONDROP_FAULT_FILES=1000 $(BIN)/pytest -s tests/faults/test_crash_loop.py

docs: setup
	$(BIN)/python -c 'from ondrop.settings import markdown; print(markdown(), end="")' \
		> docs/settings.md

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache src/*.egg-info
