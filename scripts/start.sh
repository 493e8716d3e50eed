#!/usr/bin/env bash
# Installs the dependencies, builds a Release fieldsyncd and runs it in the foreground on the
# default data directory (/var/lib/fieldsync as root, else ~/.local/share/fieldsync).
# Stop it with Ctrl-C (SIGINT) or SIGTERM.
# Usage: scripts/start.sh [fieldsyncd options, e.g. --set api.http_port=0 --config FILE]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build-release}"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh" Release "$BUILD_DIR"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
DAEMON="$(find "$BUILD_DIR" -name fieldsyncd -type f -perm -u+x -print -quit)"
[ -n "$DAEMON" ] || { echo "start.sh: no fieldsyncd binary in $BUILD_DIR" >&2; exit 1; }
SYNCCTL="$(find "$BUILD_DIR" -name syncctl -type f -perm -u+x -print -quit)"

# The defaults the daemon derives (docs/operations.md "Configuration"); --set/--config may
# change them, and the daemon's own log states what it actually uses.
if [ "$(id -u)" -eq 0 ]; then
  DATA_DIR=/var/lib/fieldsync
  SOCKET=/run/fieldsync/api.sock
  mkdir -p -m 0750 /run/fieldsync
else
  DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/fieldsync"
  SOCKET="$DATA_DIR/api.sock"
fi
cat <<MSG
fieldsyncd starting in the foreground (Ctrl-C stops it)
  data directory: $DATA_DIR
  API socket:     $SOCKET        e.g. ${SYNCCTL:-syncctl} status
  HTTP API:       http://127.0.0.1:7890/v1/status  (bearer token in $DATA_DIR/api.token)
MSG
exec "$DAEMON" "$@"
