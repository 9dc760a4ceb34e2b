# esap-spawner: every target does its own set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUCIO_VENV := .rucio-venv
RUCIO_VERSION := 41.5.1
CHP_VERSION := 5.3.0
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test lint typecheck pytest setup setup-demo setup-python setup-proxy setup-browser setup-rucio bench docs clean

demo: setup-demo setup-proxy setup-rucio
	$(BIN)/esap-spawner demo $(DEMO_ARGS)

test: setup lint typecheck pytest

setup: setup-python setup-proxy setup-browser setup-rucio

# The venv's pip must know dependency groups (PEP 735, pip 25.1+).
PIP_UPGRADE = (test -x $(BIN)/python || $(PY) -m venv $(VENV)) && $(BIN)/pip install -q --upgrade 'pip>=25.1'

# The demo: the product and its demo extra, no test tools.
setup-demo: $(VENV)/.installed-demo
$(VENV)/.installed-demo: pyproject.toml
	$(PIP_UPGRADE)
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

# Tests: the product with the extras the tests run, and the dev group (test, lint, docs tools).
setup-python: $(VENV)/.installed-test
$(VENV)/.installed-test: pyproject.toml
	$(PIP_UPGRADE)
	$(BIN)/pip install -q -e '.[demo,rucio,report]' --group dev
	touch $@

# configurable-http-proxy from npm, the proxy JupyterHub talks to.
setup-proxy: node_modules/.bin/configurable-http-proxy
node_modules/.bin/configurable-http-proxy:
	npm install --no-save --no-audit --no-fund --loglevel=error configurable-http-proxy@$(CHP_VERSION)

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
setup-browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

# The Rucio server lives in its own venv: it pins older libraries than ours.
setup-rucio: $(RUCIO_VENV)/.installed
$(RUCIO_VENV)/.installed:
	test -x $(RUCIO_VENV)/bin/python || $(PY) -m venv $(RUCIO_VENV)
	$(RUCIO_VENV)/bin/pip install -q --upgrade pip
	$(RUCIO_VENV)/bin/pip install -q rucio==$(RUCIO_VERSION) rucio-clients==$(RUCIO_VERSION) gunicorn
	touch $@

lint: setup-python
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python helm/generate_schema.py --check

typecheck: setup-python
	$(BIN)/mypy

pytest: setup
	ESAP_RUCIO_VENV=$(CURDIR)/$(RUCIO_VENV) $(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

docs: setup-python
	$(BIN)/python helm/generate_schema.py --check
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(RUCIO_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
