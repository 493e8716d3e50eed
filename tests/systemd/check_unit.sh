#!/usr/bin/env bash
# Checks the generated fieldsyncd.service offline (Type=notify, ExecReload= sends SIGHUP):
#  1. `systemd-analyze verify` prints nothing (unknown keys and bad values are only warnings
#     with exit status 0, so any output fails), with ExecStart pointed at an existing binary;
#  2. the same check catches a planted unknown key (so 1 can fail);
#  3. `systemd-analyze security` exposure stays at or below THRESHOLD (tenths: 20 = 2.0).
# Usage: check_unit.sh UNIT_FILE EXECUTABLE THRESHOLD
set -euo pipefail
unit="$1" exe="$2" threshold="$3"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

grep -q '^Type=notify$' "$unit" || { echo "FAIL: $unit is not Type=notify"; exit 1; }
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit" ||
  { echo "FAIL: $unit does not reload with SIGHUP (ExecReload=)"; exit 1; }
sed "s#^ExecStart=[^ ]*#ExecStart=$exe#" "$unit" >"$tmp/fieldsyncd.service"

verify() { (cd "$tmp" && systemd-analyze verify --man=no "$1" 2>&1); }
if ! out="$(verify fieldsyncd.service)" || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify reported:"; echo "$out"; exit 1
fi
echo "ok: systemd-analyze verify is silent"

{ cat "$tmp/fieldsyncd.service"; echo "Typ=simple"; } >"$tmp/planted.service"
out="$(verify planted.service || true)"
if [ -z "$out" ]; then
  echo "FAIL: verify did not report the planted unknown key"; exit 1
fi
echo "ok: a planted unknown key is reported: $(echo "$out" | head -1)"

if ! out="$(systemd-analyze security --offline=yes --threshold="$threshold" \
            "$tmp/fieldsyncd.service" 2>&1)"; then
  echo "$out" | grep -E '✗|Overall' || echo "$out"
  echo "FAIL: exposure above the threshold $threshold (tenths)"; exit 1
fi
echo "ok: $(echo "$out" | grep 'Overall exposure') (threshold $threshold tenths)"
