# Two entry points: `make train` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?=

.PHONY: train test clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Stamps re-run pip only when a requirements file changes.
$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

# DATA=<folder|archive> imports a local dataset; otherwise CIFAR-10 is exported when
# datasets/ holds none; then annotations are (re)written and training starts.
train: $(VENV)/.installed-runtime
	@if [ -n "$(DATA)" ]; then $(BIN)/python txt_annotation.py --from "$(DATA)"; \
	elif [ -z "$$(ls -A datasets/train 2>/dev/null)" ]; then $(BIN)/python txt_annotation.py --cifar10; \
	else $(BIN)/python txt_annotation.py; fi
	$(BIN)/python train.py

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

clean-venv:
	rm -rf $(VENV)
