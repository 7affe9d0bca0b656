# The two commands of the README: `make demo` (set up, train + evaluate on the embedded demo data)
# and `make test` (set up, run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned here (not in setup.cfg) so pip takes the builds on this machine's disk instead of
# downloading a newer torch; setup.cfg keeps honest ranges for users elsewhere.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
NPROC ?= 2

.PHONY: setup test test-fast demo lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[test,plot,baselines,tensorboard,lightning]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# A second `make demo` stops rather than overwrite runs/demo: `make demo DEMO_ARGS=--overwrite`
# moves the old runs aside (runs/demo/<run>.old-<timestamp>) and starts over.
demo: setup
	$(BIN)/python tools/demo.py --nproc $(NPROC) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs data/demo

lint: setup
	$(BIN)/pip install --quiet ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
