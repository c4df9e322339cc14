# Two commands a newcomer needs: `make demo` and `make test`. Each builds .venv when it is missing.
# GPU users: make test TORCH_SPEC='torch' EXTRAS='dev,model,llamacpp,distributed,gpu'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# model: the offline default model; llamacpp: its fast CPU backend (llama-cpp-python builds from source);
# distributed: Ray, so that the RaySandbox and `eval --ray` tests run too
EXTRAS ?= dev,model,llamacpp,distributed
PYTEST_ARGS ?=
# `make test` runs on two pytest workers (pytest-xdist), each test file on one worker (its module
# fixtures, sandboxes and models are set up once); PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
# Without a cached wheel, pip compiles llama-cpp-python. Its Python binding loads neither its
# multimodal library (mtmd) nor llama.cpp's common library, so neither is compiled (the second needs a
# hook, cmake/llama_cpp_no_common.cmake): the build drops from 269 s to about 115 s on 2 cores
# (bench/bench_install.py). Set CMAKE_ARGS yourself (e.g. -DGGML_CUDA=on) and yours is used instead;
# add these two to keep the savings.
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF '-DCMAKE_PROJECT_llama.cpp_INCLUDE=$(CURDIR)/cmake/llama_cpp_no_common.cmake'
export CMAKE_ARGS

STAMP := $(VENV)/.installed

.PHONY: demo test test-fast
demo: $(STAMP)
	$(VENV)/bin/o1code demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The unit layer only (tests/conftest.py, UNIT_FILES): the inner loop while changing code.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m unit -q $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	touch $(STAMP)
