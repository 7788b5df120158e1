#!/usr/bin/env bash
# Checks the systemd unit, its sandboxing score, the man page and the example
# config against a built ldbridge binary. CI runs it after `cargo test`; by
# hand: systemd/verify.sh [path/to/ldbridge] (default target/debug/ldbridge).
#
# Needs systemd-analyze (Debian package systemd); no running systemd.
#
# `systemd-analyze verify` insists that every Exec*= binary exists and that
# man: pages in Documentation= resolve, so it checks a copy of the unit whose
# /usr/bin/ldbridge points at the freshly built binary, with MANPATH pointing
# at this repository's man page.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=$(realpath -m "${1:-${CARGO_TARGET_DIR:-target}/debug/ldbridge}")
[ -x "$binary" ] || { echo "verify.sh: no ldbridge binary at $binary (build first)" >&2; exit 1; }
# The highest acceptable `systemd-analyze security` exposure, times ten (2.0).
max_exposure=20

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sed "s#/usr/bin/ldbridge#$binary#g" systemd/ldbridge.service >"$work/ldbridge.service"
mkdir -p "$work/man/man1"
cp systemd/ldbridge.1 "$work/man/man1/ldbridge.1"
man_check=(--man=no)
if command -v man >/dev/null 2>&1; then
  man_check=()
fi

echo "== systemd-analyze verify ldbridge.service"
# verify prints problems but can exit 0 on some (e.g. unknown keys), so any
# output at all fails the check.
out=$(MANPATH="$work/man" systemd-analyze verify "${man_check[@]}" "$work/ldbridge.service" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "verify.sh: systemd-analyze verify reported problems" >&2
  exit 1
fi

echo "== systemd-analyze security (exposure must be <= 2.0)"
systemd-analyze security --offline=true --threshold="$max_exposure" "$work/ldbridge.service" |
  tail -n 1

echo "== man page"
if command -v groff >/dev/null 2>&1; then
  warnings=$(groff -man -Tutf8 -ww -z systemd/ldbridge.1 2>&1)
  [ -z "$warnings" ] || { echo "$warnings" >&2; exit 1; }
fi
echo "systemd/ldbridge.1 ok"

echo "== check-config systemd/ldbridge.toml"
# Every cred:NAME in the example gets a dummy file, as LoadCredential= would
# provide (lower-case names: the header's "cred:NAME" is not one); each
# must also have a LoadCredential= line in the unit.
mkdir -p "$work/credentials"
for name in $(grep -o '"cred:[a-z0-9][a-z0-9._-]*"' systemd/ldbridge.toml | tr -d '"' | cut -d: -f2 | sort -u); do
  grep -q "^LoadCredential=$name:/etc/ldbridge/credentials/$name\$" systemd/ldbridge.service || {
    echo "verify.sh: cred:$name is used in ldbridge.toml but has no LoadCredential= line" >&2
    exit 1
  }
  grep -q "^SetCredential=$name:" systemd/ldbridge.service || {
    echo "verify.sh: credential $name has no SetCredential= fallback" >&2
    exit 1
  }
  echo "dummy-$name" >"$work/credentials/$name"
done
# Commented-out keys must be valid too: uncomment `# key = value` lines.
sed -E 's/^# ([a-z_]+ = )/\1/' systemd/ldbridge.toml >"$work/uncommented.toml"
for config in systemd/ldbridge.toml "$work/uncommented.toml"; do
  env -u LDBRIDGE_CONFIG CREDENTIALS_DIRECTORY="$work/credentials" \
    "$binary" --config "$config" check-config
done
echo "systemd/verify.sh: all checks passed"
