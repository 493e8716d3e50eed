#!/usr/bin/env bash
# Installs the dependencies, lints the API description (scripts/lint-api.sh), builds (Debug)
# and runs the whole test suite. This is the README's test command and what CI runs.
# Usage: scripts/test.sh [extra ctest arguments, e.g. -R config]
# Environment: BUILD_DIR (default build), FIELDSYNC_WERROR=ON, CTEST_JOBS (default 2),
# FIELDSYNC_API_LINT=0 (skip the lint, which fetches @redocly/cli from the npm registry once),
# FIELDSYNC_BROWSER_TEST=0 (skip integration/browser, which fetches puppeteer-core once).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/lint-api.sh"
bash "$ROOT/scripts/build.sh" Debug "$BUILD_DIR"
cd "$ROOT"
ctest --test-dir "$BUILD_DIR" -j "${CTEST_JOBS:-2}" --output-on-failure --timeout 300 "$@"
