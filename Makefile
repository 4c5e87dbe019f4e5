# Two commands set everything up: `make run` (the app) and `make test` (the suite, headless).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch keeps the install light; a machine with NVIDIA drivers gets the CUDA build
# of the same release from the ordinary package index (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test test-all install screenshots bench bundle bundle-test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m app

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

test-all: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m ""

clean:
	rm -rf $(VENV) build dist *.egg-info
