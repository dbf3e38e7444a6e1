# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two install stamps: `make run` needs only what serving needs; `make test` adds the rest.
SERVE_STAMP := $(VENV)/.installed-serve
FULL_STAMP := $(VENV)/.installed-full
AUDIT := tests/audit
AUDIT_STAMP := $(AUDIT)/node_modules/.installed

.PHONY: install install-serve audit-deps run test lint typecheck pytest schema bench assets clean

$(SERVE_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[embedded]'
	touch $(SERVE_STAMP)

# After the serve stamp (so `make run` after `make test` finds it), and redone whenever
# it is: the same pyproject.toml or constraints.txt change remakes both.
$(FULL_STAMP): $(SERVE_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[embedded,dev,redis]'
	touch $(FULL_STAMP)

install-serve: $(SERVE_STAMP)

install: $(FULL_STAMP)

# The graphql-http audit suite (tests/test_audit.py), from its lockfile; without npm the
# test skips (and fails in CI).
$(AUDIT_STAMP): $(AUDIT)/package.json $(AUDIT)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(AUDIT) --no-audit --no-fund --loglevel=error && touch $(AUDIT_STAMP); \
	else echo "npm not found: the GraphQL over HTTP audit will not run"; fi

audit-deps: $(AUDIT_STAMP)

run: install-serve  ## serve on the embedded database with demo data
	$(BIN)/message-metrics serve

test: install lint typecheck pytest  ## everything CI checks

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install audit-deps
	$(BIN)/pytest

schema: install  ## regenerate schema.graphql from the code
	$(BIN)/strawberry export-schema graph:schema --output schema.graphql

bench: install  ## rollups vs full scan 1k-1M, throughput, consumer lag, build (BENCH_ARGS=--quick: 1k,10k)
	$(BIN)/python -m bench $(BENCH_ARGS)

# GraphiQL, React and Chart.js for the pages, re-vendored into graph/static/vendor/ from
# scripts/assets/package-lock.json (needs npm; ASSETS_ARGS=--upgrade after editing
# scripts/assets/package.json). The browser tests (tests/test_browser.py) need Debian's
# chromium and chromium-driver: `apt-get install chromium chromium-driver`.
assets:
	$(PYTHON) scripts/vendor_assets.py $(ASSETS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
