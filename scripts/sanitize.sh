#!/usr/bin/env bash
# Builds the tests with sanitizers and runs the whole suite; any sanitizer report fails the
# test that triggered it.
#   default: AddressSanitizer + UndefinedBehaviorSanitizer in build-asan (what CI runs)
#   SANITIZE=thread: ThreadSanitizer in build-tsan
# Usage: [SANITIZE=thread] scripts/sanitize.sh [extra ctest arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANITIZE="${SANITIZE:-address,undefined}"
case "$SANITIZE" in
  address,undefined) DEFAULT_DIR=build-asan ;;
  thread) DEFAULT_DIR=build-tsan ;;
  *) echo "sanitize.sh: SANITIZE must be address,undefined or thread" >&2; exit 2 ;;
esac
BUILD_DIR="${BUILD_DIR:-$DEFAULT_DIR}"
bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/build.sh" Debug "$BUILD_DIR" -DFIELDSYNC_SANITIZE="$SANITIZE" \
  -DFIELDSYNC_BUILD_BENCH=OFF
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
# Suppressions, each with its reason, live in scripts/tsan.supp.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan.supp}"
cd "$ROOT"
# TSan runs the integration tests 5-15 times slower than the Debug build (integration/sync
# alone takes over 10 minutes on 2 shared cores).
TIMEOUT=600
if [ "$SANITIZE" = thread ]; then TIMEOUT=1800; fi
ctest --test-dir "$BUILD_DIR" -j "${CTEST_JOBS:-2}" --output-on-failure --timeout "$TIMEOUT" "$@"
