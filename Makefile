# learnstream — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit kafka-up kafka-down bench clean help openapi dashboard

help:
	@echo "make run    - start Kafka, collector, processors and sink (Ctrl-C stops all)"
	@echo "make test   - lint, typecheck and run the whole test suite on the real stack"
	@echo "make unit   - the tests that need no Kafka broker, in seconds"
	@echo "make bench  - benchmarks (results go in BENCHMARKS.md)"

$(STAMP): pyproject.toml devstack/system-deps.sh
	@bash devstack/system-deps.sh
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "learnstream needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# the dashboard page the read API serves at /dashboard/: node packages from the lock
# file, then esbuild bundles Chart.js into dashboard/dist (built, not committed)
DASHBOARD_NPM := dashboard/node_modules/.package-lock.json
$(DASHBOARD_NPM): dashboard/package-lock.json $(STAMP)
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
dashboard/dist/index.html: $(DASHBOARD_NPM) dashboard/build.mjs $(wildcard dashboard/src/*)
	cd dashboard && npm run --silent build
dashboard: dashboard/dist/index.html

run: $(STAMP) dashboard
	$(PY) -m devstack run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected nothing: a broken suite, never a pass.
test: lint typecheck dashboard
	@$(VENV)/bin/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# the fast loop: every test that needs no Kafka broker (real chdb included), in seconds
unit: $(STAMP)
	$(VENV)/bin/pytest -m "not broker" -q -n 2

# the committed API document; tests/test_openapi.py fails when it is stale
openapi: $(STAMP)
	$(PY) -m collector openapi > collector/openapi.json

kafka-up: $(STAMP)
	$(PY) -m devstack kafka start

kafka-down: $(STAMP)
	$(PY) -m devstack kafka stop

# the bench extra (quix-streams peer, py-spy) goes into .venv/bench-peer, see bench/peer_env.py
bench: $(STAMP)
	$(PY) -m bench.peer_env
	$(PY) -m bench

clean:
	rm -rf .data
