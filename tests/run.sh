#!/usr/bin/env bash
# The test command (`make test`, and so CI): a local PostgreSQL (tests/postgres/, loopback
# only, stopped by PID afterwards) for the queue tests' PostgreSQL variants, the default
# pytest suite, then the SLURM suite (`pytest -m slurm`) on a real single-node SLURM that
# tests/slurm/run.sh installs, starts and stops by PID. Where PostgreSQL or SLURM cannot be
# installed that part is skipped with a printed reason, except under CI=true, where that is
# a failure. NEUROFLOW_SKIP_SLURM=1 / NEUROFLOW_SKIP_POSTGRES=1 skip them on purpose (never
# in CI). Arguments are passed to the default suite's pytest.
# pytest's exit code 5 ("no tests collected") is a failure: a suite that collected nothing
# tested nothing.
set -uo pipefail
cd "$(dirname "$0")/.."

pytest_status() { [ "$1" -eq 5 ] && echo "pytest collected no tests: a failure" >&2; return "$1"; }

if [ "${NEUROFLOW_SKIP_POSTGRES:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "[tests/run.sh] PostgreSQL variants skipped (NEUROFLOW_SKIP_POSTGRES=1)"
else
    export PG_LOCAL_BASE=${PG_LOCAL_BASE:-/tmp/neuroflow-pg-$$}
    # a free port of the loopback interface, unless one is given
    PG_LOCAL_PORT=${PG_LOCAL_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    export PG_LOCAL_PORT
    if bash tests/postgres/start-local-postgres.sh; then
        NEUROFLOW_TEST_PG_URL=$(cat "$PG_LOCAL_BASE/url")
        export NEUROFLOW_TEST_PG_URL
        trap 'bash tests/postgres/stop-local-postgres.sh --purge' EXIT
    elif [ "${CI:-}" = true ]; then
        echo "[tests/run.sh] FAIL: cannot start PostgreSQL (CI=true: its variants must run)"
        exit 1
    else
        echo "[tests/run.sh] PostgreSQL variants SKIPPED: cannot start PostgreSQL (see above)"
        bash tests/postgres/stop-local-postgres.sh --purge > /dev/null
    fi
fi

# the slowest tests are named at the end: where CI's time goes
pytest --durations=15 "$@"
pytest_status $?; status=$?

if [ "${NEUROFLOW_SKIP_SLURM:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "[tests/run.sh] SLURM suite skipped (NEUROFLOW_SKIP_SLURM=1)"
else
    bash tests/slurm/run.sh -q --durations=10
    pytest_status $?; slurm=$?
    [ "$status" -eq 0 ] && status=$slurm
fi
exit "$status"
