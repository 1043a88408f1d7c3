#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL server: `scripts/with-postgres.sh make test`.
# The server listens on 127.0.0.1 on a free port with trust auth and no fsync (for tests only); the command
# gets DATABASE_URL. The server and its data directory are removed on exit; the command's exit code is kept.
set -euo pipefail
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PGDATA=$(mktemp -d /tmp/postback-pg.XXXXXX)  # under /tmp so the postgres user can reach it
if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root: the server runs as the postgres user
  chown postgres:postgres "$PGDATA"
  pg() { runuser -u postgres -- "$PGBIN/$1" "${@:2}"; }
else
  pg() { "$PGBIN/$1" "${@:2}"; }
fi
pg_stop() { pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PGDATA"; }
trap pg_stop EXIT
pg initdb -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
pg pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$PGDATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=${PG_MAX_CONNECTIONS:-200}" >/dev/null
pg createdb -h 127.0.0.1 -p "$PGPORT" -U postgres postback
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PGPORT/postback"
status=0
"$@" || status=$?
exit "$status"
