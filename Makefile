# blade: every entry point a user or CI runs. `make help` lists the targets.
#
# Variables (override on the command line, e.g. `make test PYTEST_ARGS="-k kernels"`):
#   PYTHON       interpreter used to create the virtual environment (default python3)
#   VENV         virtual environment folder (default .venv)
#   VENV_ARGS    extra `python -m venv` flags; `--system-site-packages` keeps a CUDA torch already
#                installed for PYTHON (a GPU node), since setup installs torch only where none imports
#   TORCH_SPEC   torch requirement installed when the environment has no torch (default torch==2.13.0,
#                the CPU build on a machine without CUDA)
#   PYTEST_ARGS  extra pytest arguments
#   BENCH_ARGS   extra `blade bench` arguments, e.g. --quick
#   EMBED_MODEL, EMBED_PROMPTS, EMBED_OUT   pipeline folder, prompt file and output folder of `make embed`

PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=
EMBED_MODEL ?= data/models/toy-wan
EMBED_PROMPTS ?= data/prompts/train.txt
EMBED_OUT ?= results/embeddings/toy-wan-train

PY := $(VENV)/bin/python
STAMP := $(VENV)/.blade-installed

.PHONY: help setup test bench bench-attention bench-masks embed toy-teacher toy-teacher-eval clean-venv

help:
	@echo "make setup   create $(VENV) and install blade with its dev and notebook extras"
	@echo "make test    run the test suite on CPU (runs setup first when needed)"
	@echo "make bench   run the benchmarks; JSON and PNG land in results/bench/ (BENCH_ARGS=--quick for a short run)"
	@echo "make embed   embed EMBED_PROMPTS with the text encoder of EMBED_MODEL; shards land in EMBED_OUT"
	@echo "make toy-teacher       train the toy Wan teacher (resumes from results/toy-teacher/), export data/models/toy-wan/"
	@echo "make toy-teacher-eval  score data/models/toy-wan/ with ToyBench; JSON lands in results/toy-teacher-eval/"

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV_ARGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,notebooks]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "import torch, diffusers, blade; print('torch', torch.__version__, '| diffusers', diffusers.__version__)"
	touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: bench-attention bench-masks

bench-attention: setup
	$(PY) -m blade bench attention $(BENCH_ARGS)

bench-masks: setup
	$(PY) -m blade bench masks $(BENCH_ARGS)

embed: setup
	$(PY) -m blade embed --model $(EMBED_MODEL) --prompts $(EMBED_PROMPTS) --out $(EMBED_OUT)

# The toy teacher: an estimated 2.5 hours on 2 idle CPU cores (from short step-time measurements).
# Rerunning resumes from the last checkpoint.
toy-teacher: setup
	$(PY) -m blade toy-teacher train --run-dir results/toy-teacher --export data/models/toy-wan

toy-teacher-eval: setup
	$(PY) -m blade toy-teacher evaluate --model data/models/toy-wan --out results/toy-teacher-eval/metrics.json

clean-venv:
	rm -rf $(VENV)
