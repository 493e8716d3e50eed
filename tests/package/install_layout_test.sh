#!/usr/bin/env bash
# `cmake --install BUILD --prefix P` into a staging directory, for P = /usr and /opt/fieldsync,
# from a build configured for another prefix: the unit runs P/bin/fieldsyncd and points at
# P's docs, and every file lands where systemd, man and bash-completion look under P.
# Usage: install_layout_test.sh BUILD_DIR
set -euo pipefail
build="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

for prefix in /usr /opt/fieldsync; do
  stage="$tmp/stage${prefix//\//_}"
  DESTDIR="$stage" cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; fail "cmake --install --prefix $prefix failed"; }
  root="$stage$prefix"
  unitdir="$(sed -n 's/^FIELDSYNC_SYSTEMD_UNITDIR:[A-Z]*=//p' "$build/CMakeCache.txt")"
  case "$unitdir" in /*) unit="$stage$unitdir/fieldsyncd.service" ;;
                     *) unit="$root/$unitdir/fieldsyncd.service" ;; esac
  for f in bin/fieldsyncd bin/syncctl lib/sysusers.d/fieldsync.conf \
           lib/tmpfiles.d/fieldsync.conf share/man/man8/fieldsyncd.8 share/man/man1/syncctl.1 \
           share/bash-completion/completions/syncctl share/doc/fieldsync/operations.md; do
    [ -f "$root/$f" ] || fail "--prefix $prefix: $prefix/$f is missing"
  done
  [ -f "$unit" ] || fail "--prefix $prefix: no unit at ${unit#"$stage"}"
  [ -f "$stage/etc/fieldsync/fieldsyncd.conf" ] || fail "--prefix $prefix: no /etc/fieldsync/fieldsyncd.conf"
  grep -qx "ExecStart=$prefix/bin/fieldsyncd --config /etc/fieldsync/fieldsyncd.conf" "$unit" ||
    fail "--prefix $prefix: $(grep '^ExecStart=' "$unit")"
  grep -qx "Documentation=file://$prefix/share/doc/fieldsync/operations.md" "$unit" ||
    fail "--prefix $prefix: $(grep '^Documentation=file' "$unit")"
  if grep -n '/usr/local' "$unit"; then fail "--prefix $prefix: the unit names /usr/local"; fi
  [ ! -e "$root/share/doc/fieldsync/man" ] || fail "--prefix $prefix: docs/man copied into the docs"
  echo "ok: --prefix $prefix: $(grep '^ExecStart=' "$unit"), unit in ${unit#"$stage"}"
done
