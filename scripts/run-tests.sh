#!/usr/bin/env bash
# `make test`: the whole suite on SQLite and, when PostgreSQL answers on 127.0.0.1:5432 (or
# TEST_DATABASE_URL is set), the tests that use the database again on PostgreSQL. The two passes run
# at the same time: most of the suite waits on processes it started (workers, daphne, capture,
# Redis restarts), so the passes share the 2 cores well. The PostgreSQL pass uses Redis database 13
# (the SQLite pass uses 15 and 14), and writes its output to test-output/postgresql.log, which is
# printed when it ends. Arguments go to both pytest runs; PG_ARGS only to the PostgreSQL one.
# With no arguments (`make test`, CI), the SQLite pass is itself split in two at the same time: the
# process-level tests (PROCESS_TESTS: workers killed, Redis restarted, databases locked, browsers;
# they spend most of their time waiting on the processes they started) on Redis database 12, and the
# rest on 15. Each pytest process has its own SQLite test database (its pid is in the name). The
# PostgreSQL pass is split the same way: its process-level tests in test_<name>_processes on Redis
# database 11, the rest in test_<name> on 13.
set -u
PY=${PY:-.venv/bin/python}
pg_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/netmon}"
redis_base="${REDIS_URL:-redis://127.0.0.1:6379/15}"
mkdir -p test-output
PROCESS_TESTS="tests/faults tests/pipeline tests/netmon/test_browser.py tests/netmon/test_browser_incidents.py"
PG_PROCESS_TESTS="tests/faults tests/pipeline"  # (the browser tests use no database: not in that pass)
pg_pid=""
pg_proc_pid=""
if [ -n "${TEST_DATABASE_URL:-}" ] || pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "--- PostgreSQL pass (${pg_url}) runs alongside; output in test-output/postgresql.log"
  if [ "$#" -eq 0 ]; then
    # its process-level tests apart too, in a database of their own (pytest-django makes test_<name>)
    # shellcheck disable=SC2086  # PG_ARGS and PG_PROCESS_TESTS hold several words on purpose
    NETMON_ENV=test NETMON_TEST_DATABASE_ONLY=1 DATABASE_URL="${pg_url}_processes" REDIS_URL="${redis_base%/*}/11" \
      "$PY" -m pytest -p no:cacheprovider ${PG_ARGS:-} $PG_PROCESS_TESTS >test-output/postgresql-processes.log 2>&1 &
    pg_proc_pid=$!
    pg_ignores=()
    for t in $PG_PROCESS_TESTS; do pg_ignores+=("--ignore=$t"); done
    # shellcheck disable=SC2086
    NETMON_ENV=test NETMON_TEST_DATABASE_ONLY=1 DATABASE_URL="$pg_url" REDIS_URL="${redis_base%/*}/13" \
      "$PY" -m pytest -p no:cacheprovider ${PG_ARGS:-} "${pg_ignores[@]}" >test-output/postgresql.log 2>&1 &
  else
    # shellcheck disable=SC2086  # PG_ARGS holds several words (no spaces inside one) on purpose
    NETMON_ENV=test NETMON_TEST_DATABASE_ONLY=1 DATABASE_URL="$pg_url" REDIS_URL="${redis_base%/*}/13" \
      "$PY" -m pytest -p no:cacheprovider ${PG_ARGS:-} "$@" >test-output/postgresql.log 2>&1 &
  fi
  pg_pid=$!
else
  echo "--- PostgreSQL not reachable on 127.0.0.1:5432: only the SQLite pass runs"
fi
proc_pid=""
proc_status=0
if [ "$#" -eq 0 ]; then
  echo "--- SQLite pass of the process-level tests runs alongside; output in test-output/sqlite-processes.log"
  # shellcheck disable=SC2086  # PROCESS_TESTS holds several paths on purpose
  NETMON_ENV=test REDIS_URL="${redis_base%/*}/12" \
    "$PY" -m pytest -p no:cacheprovider $PROCESS_TESTS >test-output/sqlite-processes.log 2>&1 &
  proc_pid=$!
  ignores=()
  for t in $PROCESS_TESTS; do ignores+=("--ignore=$t"); done
  echo "--- SQLite pass (the rest)"
  NETMON_ENV=test "$PY" -m pytest "${ignores[@]}"
else
  echo "--- SQLite pass"
  NETMON_ENV=test "$PY" -m pytest "$@"
fi
sqlite_status=$?
if [ -n "$proc_pid" ]; then
  wait "$proc_pid"
  proc_status=$?
  echo "--- SQLite pass of the process-level tests:"
  if [ "$proc_status" -eq 0 ]; then tail -n 8 test-output/sqlite-processes.log; else cat test-output/sqlite-processes.log; fi
fi
pg_status=0
if [ -n "$pg_pid" ]; then
  wait "$pg_pid"
  pg_status=$?
  [ "$pg_status" -eq 5 ] && pg_status=0  # the selection had no database tests: nothing to run there
  echo "--- PostgreSQL pass (${pg_url}):"
  if [ "$pg_status" -eq 0 ]; then tail -n 8 test-output/postgresql.log; else cat test-output/postgresql.log; fi
fi
if [ -n "$pg_proc_pid" ]; then
  wait "$pg_proc_pid"
  pg_proc_status=$?
  echo "--- PostgreSQL pass of the process-level tests (${pg_url}_processes):"
  if [ "$pg_proc_status" -eq 0 ]; then
    tail -n 8 test-output/postgresql-processes.log
  else
    cat test-output/postgresql-processes.log
    pg_status=$pg_proc_status
  fi
fi
[ "$sqlite_status" -eq 0 ] && [ "$proc_status" -eq 0 ] && [ "$pg_status" -eq 0 ]
