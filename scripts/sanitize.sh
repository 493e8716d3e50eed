#!/usr/bin/env bash
# Builds with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan and runs the tests.
# Any sanitizer report fails the test that triggered it.
# Usage: scripts/sanitize.sh [extra ctest arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build-asan}"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh" Debug "$BUILD_DIR" -DFIELDSYNC_SANITIZE=address,undefined \
  -DFIELDSYNC_BUILD_BENCH=OFF
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
cd "$ROOT"
ctest --test-dir "$BUILD_DIR" -j "${CTEST_JOBS:-2}" --output-on-failure --timeout 600 "$@"
