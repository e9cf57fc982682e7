# campaign-studio: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both create .venv if it is missing and install with constraints.txt, which pins torch==2.13.0
# (CPU wheel) and every other resolved version.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export STUDIO_HOME ?= $(CURDIR)/.studio
export DAGSTER_HOME ?= $(STUDIO_HOME)/dagster

.PHONY: install demo ui test bench bench-quick clean

install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

demo: install
	$(BIN)/python -m orchestration.demo

ui: install
	$(BIN)/python -m orchestration.instance
	$(BIN)/dagster dev --workspace workspace.yaml --host 127.0.0.1 --port 3000

test: install
	$(BIN)/python -m pytest

# benchmarks/campaign_bench.py: fanout against the provider simulator (ours vs the
# asyncio bound vs one run per partition), the cache re-run, the local campaign and
# its memory. Writes benchmarks/results/latest.{json,md}; under 10 minutes on 2 cores.
bench: install
	$(BIN)/python benchmarks/campaign_bench.py

bench-quick: install
	$(BIN)/python benchmarks/campaign_bench.py --quick

clean:
	rm -rf .studio .pytest_cache
