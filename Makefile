# Two commands a newcomer needs: `make demo` and `make test`. Each builds .venv when it is missing.
# GPU users: make test TORCH_SPEC='torch' EXTRAS='dev,model,llamacpp,distributed,gpu'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# model: the offline default model; llamacpp: its fast CPU backend (llama-cpp-python builds from source);
# distributed: Ray, so that the RaySandbox and `eval --ray` tests run too
EXTRAS ?= dev,model,llamacpp,distributed
PYTEST_ARGS ?=
# Without a cached wheel, pip compiles llama-cpp-python; o1code never loads its multimodal library
# (mtmd), and skipping it cuts the build from 269 to 213 s on 2 cores (bench/bench_install.py).
# Set CMAKE_ARGS yourself (e.g. -DGGML_CUDA=on) and yours is used instead.
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export CMAKE_ARGS

STAMP := $(VENV)/.installed

.PHONY: demo test
demo: $(STAMP)
	$(VENV)/bin/o1code demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	touch $(STAMP)
