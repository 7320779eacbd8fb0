# Two commands: `make run` (set up and start the stack, demo capture) and `make test` (set up, run the tests).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_CACHE ?= $(HOME)/.cache/pip
export PIP_CACHE_DIR := $(PIP_CACHE)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PYTHONUNBUFFERED := 1

# The PostgreSQL pass (scripts/run-tests.sh) leaves out what does not depend on the database: tests
# that do not use it (tests/conftest.py, NETMON_TEST_DATABASE_ONLY; the browser test is one), and the
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
	@PY=$(PY) PG_ARGS='$(PG_SKIP)' bash scripts/run-tests.sh $(PYTEST_ARGS)

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
