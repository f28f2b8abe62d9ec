# Two entry points for a fresh machine (see README):
#   make run    set up .venv, then run the whole embedded workflow (snakemake --cores all)
#   make test   set up .venv, then run the test suite (includes one end-to-end workflow run and,
#               where SLURM is installed and we are root, the same run through profiles/slurm)
#
# TORCH_SPEC / TORCH_PIP_ARGS choose the torch build. The default pins the release whose CPU
# wheel this project is tested with; on a machine without a local CPU wheel, get the CPU build
# from PyTorch's index:  make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
# optional dependency groups: test (pytest), cluster (Snakemake executor plugins for profiles/)
EXTRAS ?= test,cluster

BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test setup dryrun clean-results

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/snakemake --cores all $(SNAKEMAKE_ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

dryrun: $(VENV)/.installed
	$(BIN)/snakemake -n --cores all $(SNAKEMAKE_ARGS)
