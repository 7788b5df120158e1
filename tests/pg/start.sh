#!/usr/bin/env bash
# Starts a throwaway PostgreSQL from Debian's `postgresql` package for the
# tests and benches: `initdb` in a temporary directory, listening on a unix
# socket only (no TCP, no password), fsync and synchronous_commit on.
#
#   eval "$(bash tests/pg/start.sh)"   # exports LDBRIDGE_TEST_POSTGRES
#   bash tests/pg/stop.sh              # stops it and removes the directory
#
# Runs the server as the `postgres` user when started as root (initdb
# refuses root). Prints the export line on stdout, everything else on stderr.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ]; then
  echo "tests/pg/start.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 1
fi
dir=${LDBRIDGE_PG_DIR:-$(mktemp -d /tmp/ldbridge-pg.XXXXXX)}
mkdir -p "$dir"
as=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$dir"
  as=(runuser -u postgres --)
fi
"${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >&2
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start \
  -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=400 \
      -c fsync=on -c synchronous_commit=on -c shared_buffers=256MB \
      -c max_wal_size=4GB -c checkpoint_timeout=15min" >&2
echo "$dir" > /tmp/ldbridge-pg.last
echo "export LDBRIDGE_TEST_POSTGRES='postgres://postgres@localhost/postgres?host=$dir'"
