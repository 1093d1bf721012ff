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
	$(BIN)/python -m lepton_hls.rtl.warmup
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

# The Ray Serve cloud tier lives in its own environment: Ray Serve needs protobuf >= 6, TensorFlow 2.15 < 5.
RAY_VENV  ?= .venv-ray
RAY_STAMP := $(RAY_VENV)/.installed

.PHONY: cloud-ray-env test-cloud-ray

cloud-ray-env: $(RAY_STAMP)

$(RAY_STAMP): cloud/ray/requirements.lock pyproject.toml
	@test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	@echo '*' > $(RAY_VENV)/.gitignore
	$(RAY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RAY_VENV)/bin/python -m pip install --quiet -r cloud/ray/requirements.lock
	$(RAY_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(RAY_STAMP)

# Two Ray replicas behind a gateway: spread, and one replica killed under load (slow: builds digits_cnn).
test-cloud-ray: env cloud-ray-env
	$(BIN)/python -m pytest -q -m slow tests/test_cloud_ray.py $(PYTEST_ARGS)
