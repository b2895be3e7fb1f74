# Two commands for a new machine: `make test` and `make demo`. Both build .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; a bare `torch` requirement could pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv install test test-all demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(BIN)/python
install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ""

# The main job: the built-in model from 256 to 2,048 tokens (recipe builtin-8x), into $(DEMO_OUT)/.
# --resume continues an interrupted run of the same recipe, model and data; a $(DEMO_OUT)/ made by
# anything else (another recipe or longrope version) is refused in one line: remove it and rerun.
demo: install
	$(BIN)/longrope extend --recipe builtin-8x --out $(DEMO_OUT) --resume
	@echo; cat $(DEMO_OUT)/*-compare/report.md

bench: install
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
