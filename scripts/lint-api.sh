#!/usr/bin/env bash
# Lints the API description docs/openapi.yaml with Redocly's recommended rules (redocly.yaml at
# the repository root holds the exceptions, each with its reason); fails on any error or warning.
# The version is pinned so that a new release cannot break CI: 1.x runs on the Node.js 18 of
# Debian 12 (2.x needs Node.js 20.19 or later). npx fetches it from the npm registry once and
# keeps it in ~/.npm.
# Run by scripts/test.sh (and so by .ci/run); FIELDSYNC_API_LINT=0 skips it (no network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REDOCLY_CLI_VERSION="1.34.20"
if [ "${FIELDSYNC_API_LINT:-1}" = "0" ]; then
  echo "lint-api: skipped (FIELDSYNC_API_LINT=0)"
  exit 0
fi
cd "$ROOT"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
rc=0
out=$(npx --yes "@redocly/cli@${REDOCLY_CLI_VERSION}" lint --config redocly.yaml \
  docs/openapi.yaml 2>&1) || rc=$?
echo "$out"
if [ "$rc" -ne 0 ] || grep -q "You have [0-9]* warning" <<<"$out"; then
  echo "lint-api: docs/openapi.yaml does not pass the lint (errors or warnings above)" >&2
  exit 1
fi
echo "lint-api: docs/openapi.yaml is clean (@redocly/cli@${REDOCLY_CLI_VERSION})"
