# Two entry points: `make demo` (the main job on its defaults) and `make test` (lint + the whole test suite).
# Both create .venv when it is missing. torch/torchvision are pinned here, not in pyproject.toml: these
# versions lie on this machine's local wheel cache (no CUDA download); elsewhere pip fetches them as usual.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: install demo test lint clean

$(BIN)/policylab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/policylab

demo: install
	$(BIN)/policylab record --dataset.root=outputs/demo/pusht --dataset.num_episodes=20

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) outputs
