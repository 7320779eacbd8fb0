# Two commands: `make run` (set up and start the stack, demo capture) and `make test` (set up, run the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_CACHE ?= $(HOME)/.cache/pip
export PIP_CACHE_DIR := $(PIP_CACHE)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PYTHONUNBUFFERED := 1

# The second (PostgreSQL) pass leaves out what does not depend on the database: the browser, and the
# faults of processes and Redis (the database outage test runs on both).
PG_SKIP := --ignore=tests/faults/test_worker_killed.py --ignore=tests/faults/test_redis_restart.py \
	--ignore=tests/faults/test_capture_killed.py

.PHONY: run test setup venv system-deps redis migrate lint bench clean
.DEFAULT_GOAL := run

run: setup redis migrate
	@$(PY) manage.py ensure_demo_user
	@# Demo mode should show anomalies from the first minute: a first model from demo traffic.
	@$(PY) manage.py train_detector --demo 30000 --if-none 2>&1 | grep -v -e '^WARNING' -e oneDNN -e cpu_feature || true
	@echo "Dashboard: http://127.0.0.1:$${NETMON_PORT:-8000}/   API docs: http://127.0.0.1:$${NETMON_PORT:-8000}/api/docs/   (Ctrl-C stops everything)"
	@$(VENV)/bin/honcho start -f Procfile

test: setup redis
	@NETMON_ENV=test $(PY) -m pytest $(PYTEST_ARGS)
	@if [ -n "$${TEST_DATABASE_URL:-}" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
	  echo "--- again on PostgreSQL ($${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/netmon})"; \
	  NETMON_ENV=test DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/netmon} \
	    $(PY) -m pytest -m "not browser" $(PG_SKIP) $(PYTEST_ARGS); \
	else echo "--- PostgreSQL not reachable on 127.0.0.1:5432: skipped the PostgreSQL run"; fi

setup: system-deps venv

system-deps:
	@bash scripts/system-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required: install python3.11 (or set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.txt
	@touch $@

redis:
	@bash scripts/ensure-redis.sh

migrate: venv
	@$(PY) manage.py migrate --noinput -v 0

lint: venv
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup redis migrate
	@for b in bench/capture.py bench/detection.py bench/export.py bench/latency.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var/ .pytest_cache test-output
