#!/usr/bin/env bash
# stop-local-postgres.sh - stop the server start-local-postgres.sh started, by the PID in
# its postmaster.pid (SIGINT = fast shutdown, SIGKILL after 30 s). `--purge` also deletes
# its data directory.
set -uo pipefail
BASE=${PG_LOCAL_BASE:-/tmp/neuroflow-pg}
DATA=$BASE/data
log() { printf '[stop-local-postgres %s] %s\n' "$(date +%T)" "$*"; }

if [ -s "$DATA/postmaster.pid" ]; then
  pid=$(head -1 "$DATA/postmaster.pid")
  if kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = postgres ]; then
    log "stopping postgres (pid $pid)"
    kill -INT "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "postgres did not exit, SIGKILL"; kill -9 "$pid"; fi
  fi
fi
if [ "${1:-}" = --purge ]; then log "purging $BASE"; rm -rf "$BASE"; fi
log "done"
