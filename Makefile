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
#   Notebooks (nb01 ... nb04, demo, reproduce):
#   NB_OUT       folder of executed notebooks and their results (default results/notebooks; demo and
#                reproduce use results/demo/RUN_ID and results/reproduce/RUN_ID)
#   PARAMS_DIR   folder of the per-notebook papermill parameter files 01.yaml ... 04.yaml
#                (default notebooks/params/demo)
#   PARAMS       a parameter file for one nbXX target instead of PARAMS_DIR/0N.yaml
#   MODEL, LORA, DEVICE   pipeline folder, student LoRA and device passed to the notebooks that take them
#   RUN_ID       run folder name of demo / reproduce (default: the UTC time)
#   LAB_PORT     port of `make lab` (default 8888)

PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=
EMBED_MODEL ?= data/models/toy-wan
EMBED_PROMPTS ?= data/prompts/train.txt
EMBED_OUT ?= results/embeddings/toy-wan-train
NB_OUT ?= results/notebooks
PARAMS_DIR ?= notebooks/params/demo
PARAMS ?=
MODEL ?=
LORA ?=
DEVICE ?=
LAB_PORT ?= 8888
ifndef RUN_ID
RUN_ID := $(shell date -u +%Y%m%d-%H%M%S)
endif

PY := $(VENV)/bin/python
STAMP := $(VENV)/.blade-installed

.PHONY: help setup test bench bench-attention bench-masks embed toy-teacher toy-teacher-eval clean-venv \
	demo reproduce lab nb01 nb02 nb03 nb04

help:
	@echo "make setup   create $(VENV) and install blade with its dev and notebook extras"
	@echo "make test    run the test suite on CPU (runs setup first when needed)"
	@echo "make bench   run the benchmarks; JSON and PNG land in results/bench/ (BENCH_ARGS=--quick for a short run)"
	@echo "make embed   embed EMBED_PROMPTS with the text encoder of EMBED_MODEL; shards land in EMBED_OUT"
	@echo "make toy-teacher       train the toy Wan teacher (resumes from results/toy-teacher/), export data/models/toy-wan/"
	@echo "make toy-teacher-eval  score data/models/toy-wan/ with ToyBench; JSON lands in results/toy-teacher-eval/"
	@echo "make demo    notebooks 01-04 on the toy world into results/demo/RUN_ID/, then summary.json and the table"
	@echo "make reproduce  the longer toy run (PARAMS_DIR=notebooks/params/reproduce) into results/reproduce/RUN_ID/"
	@echo "make lab     JupyterLab on 127.0.0.1:LAB_PORT"
	@echo "make nb01 ... nb04   run one notebook with papermill (MODEL=, LORA=, DEVICE=, PARAMS=, NB_OUT=)"

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

# Notebooks run with papermill: parameters from a YAML file (-f), paths and the Makefile variables on
# top (-r, raw strings). papermill exits non-zero when a cell fails, which fails the target.
PAPERMILL := $(PY) -m papermill --cwd notebooks
params_of = $(if $(PARAMS),$(PARAMS),$(PARAMS_DIR)/$(1).yaml)
model_arg = $(if $(MODEL),-r model_path $(abspath $(MODEL)))
lora_arg = $(if $(LORA),-r lora_path $(abspath $(LORA)))
device_arg = $(if $(DEVICE),-r device $(DEVICE))
NB_ABS = $(abspath $(NB_OUT))

nb01: setup
	mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/01_prompt_embeddings.ipynb $(NB_OUT)/01_prompt_embeddings.ipynb -f $(call params_of,01) \
		-r out_dir $(NB_ABS)/01_prompt_embeddings $(model_arg)

nb02: setup
	mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/02_sparsity_masks.ipynb $(NB_OUT)/02_sparsity_masks.ipynb -f $(call params_of,02) \
		-r out_dir $(NB_ABS) -r run_id 02_sparsity_masks $(model_arg) $(lora_arg) $(device_arg)

nb03: setup
	mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/03_distillation.ipynb $(NB_OUT)/03_distillation.ipynb -f $(call params_of,03) \
		-r embeddings_dir $(NB_ABS)/01_prompt_embeddings -r out_dir $(NB_ABS)/03_distillation $(model_arg)

# Without LORA=, the student of nb03 in the same NB_OUT.
nb04: setup
	mkdir -p $(NB_OUT)
	$(PAPERMILL) notebooks/04_evaluation.ipynb $(NB_OUT)/04_evaluation.ipynb -f $(call params_of,04) \
		-r out_dir $(NB_ABS) -r run_id 04_evaluation $(model_arg) $(device_arg) \
		-r lora_path $(if $(LORA),$(abspath $(LORA)),$(NB_ABS)/03_distillation)

# notebooks 01 to 04 into $(1)/RUN_ID/, then summary.json from the evaluation and the metrics table
define run_notebooks
	@test -f $(if $(MODEL),$(MODEL),data/models/toy-wan)/model_index.json || { \
		echo "no pipeline folder at $(if $(MODEL),$(MODEL),data/models/toy-wan): run make toy-teacher first, or pass MODEL="; exit 1; }
	mkdir -p $(1)/$(RUN_ID)
	date +%s > $(1)/$(RUN_ID)/started_at
	$(MAKE) --no-print-directory nb01 nb02 nb03 nb04 NB_OUT=$(1)/$(RUN_ID) RUN_ID=$(RUN_ID) PARAMS_DIR=$(PARAMS_DIR)
	$(PY) -m blade demo-summary --metrics $(1)/$(RUN_ID)/04_evaluation/metrics.json \
		--out $(1)/$(RUN_ID)/summary.json --started $$(cat $(1)/$(RUN_ID)/started_at)
	cat $(1)/$(RUN_ID)/04_evaluation/metrics.md
endef

demo: setup
	$(call run_notebooks,results/demo)

reproduce: setup
	$(call run_notebooks,results/reproduce)

reproduce: PARAMS_DIR = notebooks/params/reproduce

lab: setup
	$(PY) -m jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser notebooks
