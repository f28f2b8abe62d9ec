# Entry points for a fresh machine (see README); each sets up .venv first:
#   make run       run the whole embedded workflow (snakemake --cores all)
#   make test      the FAST tier, pytest -m "not slow" (3-4 min on 2 cores): every unit test plus ONE
#                  small end-to-end workflow run (tests/test_workflow_fast.py, tests/configs/fast.yaml)
#   make test-all  every test (~45 min on 2 cores): the fast tier plus the `slow` ones (the full
#                  embedded run and its checks, fault injection and, where SLURM is installed and we
#                  are root, the same run through profiles/slurm)
#   make lint      ruff on src/ tests/ benchmarks/ and `snakemake --lint` on Snakefile + rules/*.smk;
#                  fails on any finding (.ci/run runs lint and test-all)
# Test tiers are pytest markers (pyproject.toml): slow, e2e, network, slurm.
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
# optional dependency groups: test (pytest, ruff), cluster (Snakemake executor plugins for profiles/)
EXTRAS ?= test,cluster

BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test test-all lint setup dryrun clean-results

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/snakemake --cores all $(SNAKEMAKE_ARGS)

# pytest's exit status passes through: a failure, and also 5 (no test collected), fails the target
test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# both linters run, whichever fails first; `snakemake --lint` exits 1 on any finding
lint: $(VENV)/.installed
	@rc=0; \
	echo "== ruff check src tests benchmarks"; $(BIN)/ruff check src tests benchmarks || rc=1; \
	echo "== snakemake --lint"; $(BIN)/snakemake --lint || rc=1; \
	exit $$rc

dryrun: $(VENV)/.installed
	$(BIN)/snakemake -n --cores all $(SNAKEMAKE_ARGS)
