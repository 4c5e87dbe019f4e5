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

# The desktop bundle (PyInstaller, one folder, packaging/README.md): its own targets, never part of
# `make test`. `bundle-test` unpacks it and runs `--version` and `--self-test` with a fresh HOME.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' engine/__init__.py)
PLATFORM := $(shell uname -s | tr A-Z a-z)-$(shell uname -m)
BUNDLE := dist/weightsmith-$(VERSION)-$(PLATFORM).tar.gz
BUNDLE_STAMP := $(VENV)/.bundle-installed

$(BUNDLE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bundle]"
	touch $(BUNDLE_STAMP)

bundle: $(BUNDLE_STAMP)
	@start=$$(date +%s) && \
	$(PY) -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/weightsmith.spec && \
	tar -C dist -czf $(BUNDLE) weightsmith-$(VERSION) && \
	echo "bundle built in $$(( $$(date +%s) - start )) s:" && du -sh dist/weightsmith-$(VERSION) $(BUNDLE)

bundle-test: bundle
	sh packaging/bundle_test.sh $(BUNDLE)

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m app.devtools.screenshots docs/screenshots

clean:
	rm -rf $(VENV) build dist *.egg-info
