# The two commands of the README:
#   make demo   set up (system packages, .venv/) and run the main job
#   make test   set up and run the test suite (what CI runs)
# and, for the edit loop, make test-fast: the tests not marked slow (no real simulator runs).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: setup demo test test-fast bench lint
setup: $(STAMP)

$(STAMP): setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)
	bash scripts/setup_system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(PY) scripts/pipeline.py $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest --benchmark-skip -q

test-fast: setup
	$(PY) -m pytest -m "not slow" --benchmark-skip -q

bench: setup
	$(PY) -m pytest --benchmark-only tests/benchmarks
