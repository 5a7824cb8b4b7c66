#!/usr/bin/env bash
# Install (Debian's package) and start a throwaway PostgreSQL server on 127.0.0.1 for the store
# tests; print the SQLAlchemy URL on stdout. Everything else goes to stderr.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "installing postgresql (apt)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=${TWIN_PG_DATA:-/tmp/twin-ci-pg}
port=${TWIN_PG_PORT:-55432}
if [ ! -f "$data/PG_VERSION" ]; then
  rm -rf "$data"
  mkdir -p "$data"
  chown postgres:postgres "$data"
  su postgres -c "$bin/initdb -D $data -A trust -U postgres" >&2
fi
if ! su postgres -c "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
  su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-c listen_addresses=127.0.0.1 -p $port -k /tmp' -w start" >&2
fi
su postgres -c "psql -h 127.0.0.1 -p $port -U postgres -tc \"SELECT 1 FROM pg_database WHERE datname='twin_test'\"" | grep -q 1 \
  || su postgres -c "psql -h 127.0.0.1 -p $port -U postgres -c 'CREATE DATABASE twin_test'" >&2
echo "postgresql+psycopg://postgres@127.0.0.1:$port/twin_test"
