#!/usr/bin/env bash
# run.sh - start the local SLURM cluster, run the slurm test suite (`pytest -m slurm`, extra
# arguments are passed on), stop the cluster again by PID, return pytest's status.
#
# Cannot install SLURM (not root, no apt-get)? -> prints why and SKIPS (exit 0), except with
# CI=true, where that is a failure (exit 1): CI must never skip the suite silently. Not root
# but a cluster is already running -> the tests use it.
# A cluster that was already running when this script started is left running (someone
# else owns it); set SLURM_LOCAL_STOP=1 to stop it anyway, SLURM_LOCAL_STOP=0 to keep a
# cluster this script started.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE=${SLURM_LOCAL_BASE:-/tmp/neuroflow-slurm}
export SLURM_LOCAL_BASE=$BASE

say() { printf '[slurm-tests] %s\n' "$*"; }
skip_or_fail() {
  if [ "${CI:-}" = true ]; then say "FAIL: $* (CI=true: the SLURM suite must run)"; exit 1; fi
  say "SKIPPED: $*"; exit 0
}
daemon_alive() { # daemon_alive PIDFILE COMM
  local pid; [ -s "$1" ] || return 1; pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$2" ]
}

if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
[ -n "$PY" ] || skip_or_fail "no python3"

cluster_answers() { command -v scontrol > /dev/null && scontrol ping 2>/dev/null | grep -q UP; }

if [ "$(id -u)" != 0 ]; then
  # cannot install, start or stop anything: use a cluster someone else started, or skip
  cluster_answers || skip_or_fail "not root: cannot install or start SLURM (and none is running)"
  say "not root: using the running cluster as it is"
else
  installed=1
  for p in munge slurmctld slurmd slurm-client slurmdbd mariadb-server; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || installed=0
  done
  if [ "$installed" = 0 ] && ! command -v apt-get > /dev/null; then
    skip_or_fail "SLURM is not installed and there is no apt-get to install it"
  fi
  already_up=0
  daemon_alive "$BASE/run/slurmctld.pid" slurmctld && already_up=1
  stop_after=${SLURM_LOCAL_STOP:-$((1 - already_up))}
  if [ "$stop_after" = 1 ]; then
    trap 'bash "$HERE/stop-local-slurm.sh"' EXIT
  else
    say "leaving the cluster running afterwards (stop it with: bash $HERE/stop-local-slurm.sh)"
  fi
  bash "$HERE/start-local-slurm.sh" || {
    [ "$installed" = 0 ] && skip_or_fail "could not install/start SLURM (see above)"
    say "FAIL: start-local-slurm.sh failed"; exit 1
  }
fi

cd "$ROOT"
say "running: pytest -m slurm $*"
"$PY" -m pytest -m slurm "$@"
status=$?
say "pytest exited with $status"
exit $status
