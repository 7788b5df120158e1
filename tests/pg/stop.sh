#!/usr/bin/env bash
# Stops the PostgreSQL tests/pg/start.sh started and removes its directory.
set -euo pipefail
dir=${1:-$(cat /tmp/ldbridge-pg.last 2>/dev/null || true)}
[ -n "$dir" ] && [ -d "$dir/data" ] || exit 0
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as=()
[ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
rm -rf "$dir"
