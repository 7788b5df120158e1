#!/usr/bin/env bash
# Checks the Debian package `cargo deb` built (target/debian/ldbridge_*.deb),
# so packaging cannot rot: the files a user gets, the conffile, the unit
# (the repository's own), and a binary that runs. CI runs it after building
# the package; by hand: cargo deb && systemd/check-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls target/debian/ldbridge_*.deb | grep -v dbgsym | head -n 1)
echo "== $deb"
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/ldbridge ./usr/lib/systemd/system/ldbridge.service \
  ./etc/ldbridge/ldbridge.toml ./usr/share/doc/ldbridge/examples/ldbridge.toml \
  ./usr/share/man/man1/ldbridge.1.gz ./usr/share/doc/ldbridge/README.md \
  ./usr/share/doc/ldbridge/CHANGELOG.md; do
  grep -qx "$path" <<<"$contents" || { echo "missing from the package: $path" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/ldbridge/ldbridge.toml "$work/control/conffiles" \
  || { echo "/etc/ldbridge/ldbridge.toml is not a conffile" >&2; exit 1; }
dpkg-deb -x "$deb" "$work/root"
cmp systemd/ldbridge.service "$work/root/usr/lib/systemd/system/ldbridge.service" \
  || { echo "the packaged unit differs from systemd/ldbridge.service" >&2; exit 1; }
"$work/root/usr/bin/ldbridge" --version
# The packaged example config, with a stand-in for every credential it names.
mkdir -p "$work/credentials"
for name in $(grep -o '"cred:[a-z0-9][a-z0-9._-]*"' "$work/root/etc/ldbridge/ldbridge.toml" | tr -d '"' | cut -d: -f2 | sort -u); do
  echo "stand-in-$name" >"$work/credentials/$name"
done
CREDENTIALS_DIRECTORY="$work/credentials" \
  "$work/root/usr/bin/ldbridge" --config "$work/root/etc/ldbridge/ldbridge.toml" check-config
echo "$deb: ok"
