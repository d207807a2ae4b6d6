# EDM — the two commands are `make run` and `make test`; everything else is for developers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# Without DATABASE_URL, scripts/devdb.py provisions a PostgreSQL (throwaway for tests,
# kept in .edm/pgdata for `make run`) and stops it afterwards.
DEVDB  := $(BIN)/python scripts/devdb.py
PYTEST_ARGS ?=

.PHONY: venv browser system-tools test run lint format bench bench-smoke migrations-check audit clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# The browser tests drive Debian's Chromium: installed here where the machine can (root with
# apt-get); elsewhere those tests are skipped with the reason.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null) || echo "could not install chromium: browser tests skip"; \
	  else echo "no chromium installed: the browser tests will be skipped"; fi; \
	fi

# Debian's pgbouncer (the scale-out test puts it in front of PostgreSQL) and wrk (the API
# benchmark's load generator): installed where the machine can (root with apt-get);
# elsewhere that test and benchmark say why they skip.
system-tools:
	@if ! command -v pgbouncer >/dev/null && ! test -x /usr/sbin/pgbouncer || ! command -v wrk >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's pgbouncer and wrk"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      pgbouncer wrk >/dev/null) || echo "could not install pgbouncer/wrk: the tests that need them skip"; \
	  else echo "no pgbouncer/wrk installed: the tests and benchmarks that need them skip"; fi; \
	fi

test: venv browser system-tools
	DEBUG=1 $(DEVDB) -- $(BIN)/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)
	@# Coverage floors (apps ≥ 85 %, apps/dispatch ≥ 90 %) on the whole suite only.
	@if [ -z "$(PYTEST_ARGS)" ]; then $(BIN)/python scripts/coverage_check.py; fi

run: venv
	DEBUG=1 $(DEVDB) --data-dir .edm/pgdata -- $(BIN)/python manage.py devstack

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Known vulnerabilities in the installed (pinned) requirements: fails on any. AUDIT_ARGS=--strict
# also fails when a package could not be checked (the vulnerability service unreachable).
audit: venv
	$(BIN)/pip-audit --local --progress-spinner off $(AUDIT_ARGS)

migrations-check: venv
	DEBUG=1 $(DEVDB) -- $(BIN)/python manage.py makemigrations --check --dry-run

bench: venv system-tools
	DEBUG=1 $(DEVDB) -- $(BIN)/python bench/run_all.py

bench-smoke: venv
	DEBUG=1 $(DEVDB) -- $(BIN)/python bench/run_all.py --smoke

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage htmlcov
