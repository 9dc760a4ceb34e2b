# esap-spawner: every target does its own set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUCIO_VENV := .rucio-venv
RUCIO_VERSION := 41.5.1
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(BIN):$(PATH)

.PHONY: test-min demo test lint typecheck test-unit test-integration test-e2e test-k8s setup setup-demo setup-python setup-proxy check-node setup-browser setup-bench setup-rucio bench docs clean kube

demo: setup-demo setup-proxy setup-rucio
	$(BIN)/esap-spawner demo $(DEMO_ARGS)

# Tests in tiers, each a step of its own that prints how long it took, and `make test` a
# table of them at the end: lint, typecheck, unit (no I/O), integration (the simulator, real
# JupyterHub, Rucio and databases), e2e (a browser), k8s (a real control plane). A tier stops
# the run when it fails. To add one: a target `test-NAME` whose recipe is
# `$(call tier,NAME,COMMAND)`, listed in TIERS. PYTEST_ARGS go to every pytest tier
# (`make test-unit PYTEST_ARGS=-x`).
TIERS := lint typecheck test-unit test-integration test-e2e test-k8s
TIER_TIMES := $(CURDIR)/.tier-times
PYTEST := ESAP_RUCIO_VENV=$(CURDIR)/$(RUCIO_VENV) $(BIN)/pytest -q -p no:cacheprovider

test: setup
	@rm -f $(TIER_TIMES); $(MAKE) --no-print-directory $(TIERS); status=$$?; \
	echo "== tiers"; cat $(TIER_TIMES) 2>/dev/null; rm -f $(TIER_TIMES); exit $$status

# $(call tier,NAME,COMMAND): run one tier, print its time, add its line to the table
define tier
	@echo "== $(1)"
	@start=$$EPOCHREALTIME; ( $(2) ); status=$$?; \
	seconds=$$(awk "BEGIN {printf \"%.1f\", $$EPOCHREALTIME - $$start}"); \
	line=$$(printf '%-12s %8s s  %s' '$(1)' "$$seconds" "$$( [ $$status = 0 ] && echo ok || echo FAILED )"); \
	echo "== $$line"; echo "$$line" >> $(TIER_TIMES); exit $$status
endef

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

# configurable-http-proxy from npm, the proxy JupyterHub talks to: package.json and
# package-lock.json pin it and every package under it; `npm ci` installs exactly those into
# ./node_modules, wherever the checkout sits. Skipped while node_modules matches the lock.
# A node_modules that is a link (to another checkout's) is used as it is: npm ci would
# empty the folder it points to.
NODE_MIN := 20
setup-proxy: check-node
	@if [ -L node_modules ]; then \
	  test -x node_modules/.bin/configurable-http-proxy || { echo "node_modules links to $$(readlink node_modules), which has no configurable-http-proxy"; exit 1; }; \
	elif ! cmp -s package-lock.json node_modules/.esap-package-lock.json; then \
	  npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.esap-package-lock.json; \
	fi

check-node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
	  echo "Node.js $(NODE_MIN) or newer and npm are needed (for configurable-http-proxy): install them, e.g. from your distribution (Debian 13, Ubuntu 25.04 or newer: apt-get install nodejs npm) or nodejs.org"; exit 1; }
	@major=$$(node -p 'process.versions.node.split(".")[0]'); [ "$$major" -ge $(NODE_MIN) ] || { \
	  echo "Node.js $(NODE_MIN) or newer is needed, this is $$(node --version): older distributions (Debian 12, Ubuntu 24.04) ship Node 18; install Node $(NODE_MIN)+ from nodejs.org or NodeSource"; exit 1; }

# $(call apt_install,COMMAND,PACKAGE): Debian's PACKAGE, unless COMMAND is already there.
apt_install = command -v $(1) >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; fi; }

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
setup-browser:
	@$(call apt_install,chromium,chromium)

# The benchmarks' load generator (wrk) and instruction counter (valgrind's callgrind).
setup-bench:
	@$(call apt_install,wrk,wrk)
	@$(call apt_install,valgrind,valgrind)

# The Rucio server lives in its own venv: it pins older libraries than ours.
setup-rucio: $(RUCIO_VENV)/.installed
$(RUCIO_VENV)/.installed:
	test -x $(RUCIO_VENV)/bin/python || $(PY) -m venv $(RUCIO_VENV)
	$(RUCIO_VENV)/bin/pip install -q --upgrade pip
	$(RUCIO_VENV)/bin/pip install -q rucio==$(RUCIO_VERSION) rucio-clients==$(RUCIO_VERSION) gunicorn
	touch $@

# The oldest versions pyproject.toml declares (tools/lower_bounds.py pins every ">=" bound of
# the dependencies and the extras the tests use), in their own venv: the unit and
# integration tiers. Not part of `make test` (it installs a second environment).
MIN_VENV := .venv-min
test-min: setup-proxy setup-rucio
	(test -x $(MIN_VENV)/bin/python || $(PY) -m venv $(MIN_VENV)) && $(MIN_VENV)/bin/pip install -q --upgrade 'pip>=25.1' packaging
	$(MIN_VENV)/bin/python tools/lower_bounds.py demo rucio report > $(MIN_VENV)/lower-bounds.txt
	$(MIN_VENV)/bin/pip install -q -e '.[demo,rucio,report]' --group test --group docs -c $(MIN_VENV)/lower-bounds.txt
	@echo "== installed at their lowest declared versions:"
	@$(MIN_VENV)/bin/python -c 'import sys, importlib.metadata as m; [print(f"  {n} {m.version(n)}") for n in (l.split("==")[0] for l in open(sys.argv[1]).read().split())]' $(MIN_VENV)/lower-bounds.txt
	$(call tier,test-min,ESAP_RUCIO_VENV=$(CURDIR)/$(RUCIO_VENV) $(MIN_VENV)/bin/pytest -q -p no:cacheprovider tests/unit tests/integration $(PYTEST_ARGS))

lint: setup-python
	$(call tier,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/python helm/generate_schema.py --check)

typecheck: setup-python
	$(call tier,typecheck,$(BIN)/mypy)

test-unit: setup-python
	$(call tier,unit,$(PYTEST) tests/unit $(PYTEST_ARGS))

test-integration: setup
	$(call tier,integration,$(PYTEST) tests/integration $(PYTEST_ARGS))

test-e2e: setup
	$(call tier,e2e,$(PYTEST) tests/e2e $(PYTEST_ARGS))

# The k8s tier: a real control plane (tools/kube-up) built from upstream Go modules (Go 1.26+).
# tools/build-kube builds the binaries once per machine into the user's cache and says how long
# it took; under CI=true a control plane that cannot start fails the tier instead of skipping it.
kube:
	@tools/build-kube >/dev/null && echo "control plane binaries: $$(tools/build-kube --print)"

test-k8s: setup kube
	$(call tier,k8s,$(PYTEST) -m k8s tests/k8s tests/integration $(PYTEST_ARGS))

# Every benchmark, then one table of their headline figures against their targets.
bench: setup setup-bench
	ESAP_RUCIO_VENV=$(CURDIR)/$(RUCIO_VENV) $(BIN)/python benchmarks/run.py $(BENCH)

docs: setup-python
	$(BIN)/python helm/generate_schema.py --check
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(MIN_VENV) $(RUCIO_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache $(TIER_TIMES)
