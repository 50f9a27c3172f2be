#!/usr/bin/env bash
# start-local-postgres.sh - install (if missing), initialise and start a throw-away
# PostgreSQL server for the tests, listening on 127.0.0.1 only. Prints nothing but log
# lines; the server's SQLAlchemy URL is written to $PG_LOCAL_BASE/url. Idempotent: a server
# already running from $PG_LOCAL_BASE is reused. Stop it with stop-local-postgres.sh (by PID).
#
# Environment knobs (all optional):
#   PG_LOCAL_BASE   data, socket and log directory   (default /tmp/neuroflow-pg)
#   PG_LOCAL_PORT   TCP port on 127.0.0.1             (default 55432)
# As root it installs Debian's `postgresql` package when missing and runs the server as the
# package's `postgres` user; otherwise it needs the binaries installed and runs as you.
set -euo pipefail
BASE=${PG_LOCAL_BASE:-/tmp/neuroflow-pg}
PORT=${PG_LOCAL_PORT:-55432}
DATA=$BASE/data RUN=$BASE/run LOG=$BASE/postgres.log
DBUSER=neuroflow

log() { printf '[start-local-postgres %s] %s\n' "$(date +%T)" "$*"; }
die() { log "ERROR: $*"; exit 1; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

BIN=$(bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and only root can install it"
  command -v apt-get > /dev/null || die "PostgreSQL is not installed and there is no apt-get"
  log "installing postgresql"
  # keep the package's postinst from starting its own cluster (no systemd here)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql > /dev/null || {
    apt-get update -q > /dev/null && apt-get install -y -q postgresql > /dev/null; } \
    || die "apt-get install postgresql failed"
  BIN=$(bindir)
  [ -x "$BIN/initdb" ] || die "no initdb after installing postgresql"
fi

if [ "$(id -u)" = 0 ]; then
  id postgres > /dev/null 2>&1 || die "root, but the postgres user does not exist"
  as_owner() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_owner() { "$@"; }
  OWNER=$(id -un)
fi

pid_alive() { # the postmaster of $DATA runs
  [ -s "$DATA/postmaster.pid" ] || return 1
  local pid; pid=$(head -1 "$DATA/postmaster.pid")
  kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = postgres ]
}

mkdir -p "$BASE" "$RUN"
chown "$OWNER" "$BASE" "$RUN"
chmod 700 "$BASE"
if pid_alive; then
  log "already running (pid $(head -1 "$DATA/postmaster.pid")), reused"
else
  if [ ! -s "$DATA/PG_VERSION" ]; then
    log "initdb $DATA ($("$BIN/postgres" --version))"
    as_owner "$BIN/initdb" -D "$DATA" -U "$DBUSER" --auth=trust -E UTF8 --no-sync > "$BASE/initdb.log" \
      || { cat "$BASE/initdb.log"; die "initdb failed"; }
    cat >> "$DATA/postgresql.conf" <<CONF
# neuroflow tests: loopback only, a socket of our own, fast and disposable
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  fi
  rm -f "$DATA/postmaster.pid"  # a stale one (the server is not alive, checked above)
  log "starting on 127.0.0.1:$PORT"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start > /dev/null \
    || { tail -20 "$LOG"; die "pg_ctl start failed"; }
fi
for _ in $(seq 1 60); do
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || die "the server does not answer on 127.0.0.1:$PORT"
echo "postgresql+psycopg://$DBUSER@127.0.0.1:$PORT/postgres" > "$BASE/url"
log "up (pid $(head -1 "$DATA/postmaster.pid")): $(cat "$BASE/url")"
