# Two entry points: `make train` and `make test`. Each creates .venv on first use.
#   make train                              CIFAR-10 (exported into datasets/ when it is empty)
#   make train DATA=photos/                 import a folder or archive, then train on it
#   make train DATA=other.zip FORCE=1       replace the dataset already in datasets/
#   make train ARGS="--epochs 20 --backbone resnet18"    any train.py flags
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?=
ARGS   ?=
FORCE  ?=

.PHONY: train test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps re-run pip only when a requirements file changes.
$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt requirements-export.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

# DATA imports a local dataset (refused over a different one unless FORCE=1); otherwise
# CIFAR-10 is exported when datasets/ holds none; then annotations are (re)written and
# training starts with ARGS.  DATA and ARGS reach the scripts through the environment and
# are never parsed by a shell: a path with quotes, `$` or backticks is a path, and ARGS is
# split into words like a command line (shlex), nothing more.  Any step failing stops here.
# $(value ...): a `$` in DATA, ARGS or FORCE is text, not a make variable or function.
override DATA := $(value DATA)
override ARGS := $(value ARGS)
override FORCE := $(value FORCE)
export DATA ARGS
train: $(VENV)/.installed-runtime
	@set -e; \
	if [ -n "$$DATA" ]; then $(BIN)/python txt_annotation.py --from "$$DATA" $(if $(FORCE),--force); \
	elif [ -z "$$(ls -A datasets/train 2>/dev/null)" ]; then $(BIN)/python txt_annotation.py --cifar10; \
	else $(BIN)/python txt_annotation.py; fi; \
	$(BIN)/python -c 'import os, shlex, sys; os.execv(sys.executable, [sys.executable, "train.py", *shlex.split(os.environ.get("ARGS", ""))])'

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

clean-venv:
	rm -rf $(VENV)
