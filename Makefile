# Two commands matter: `make demo` and `make test`. Both create the environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: env demo test test-slow bench clean

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: env
	$(BIN)/lepton-hls demo --out out/demo

test: env
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: env
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: env
	$(BIN)/python benchmarks/emulate.py

clean:
	rm -rf out packages .pytest_cache
