#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with clang, libFuzzer, ASan and UBSan in build-fuzz and
# runs each for a bounded time, starting from its seed corpus (fuzz/corpus/<target>, only
# read: new inputs go to a temporary directory). Any crash, sanitizer report, leak, timeout
# or failed check fails the run; the input that triggered it is kept and its path printed.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 20 (what CI runs); TARGET e.g. http_request (default: all)
# Environment: BUILD_DIR (default build-fuzz), JOBS (compile jobs, and targets fuzzed at
#   once, default: CPUs), FUZZ_ARTIFACTS (where failing inputs are kept, default
#   <BUILD_DIR>/fuzz-artifacts).
# Reproduce a failure: <BUILD_DIR>/fuzz/fuzz_<target> <artifact file>
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER="${1:-20}"
shift $(( $# > 0 ? 1 : 0 ))
case "$SECONDS_PER" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a number" >&2; exit 2 ;; esac
ALL_TARGETS=(ble_air bundle_file bundle_records config_file http_request image_variants invite_code json_envelope json_merge renewal_links subscription sync_frames version_header where_query)
TARGETS=("${@:-${ALL_TARGETS[@]}}")
BUILD_DIR="${BUILD_DIR:-build-fuzz}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
ARTIFACTS="${FUZZ_ARTIFACTS:-$BUILD_DIR/fuzz-artifacts}"
JOBS="${JOBS:-$(nproc)}"

bash "$ROOT/scripts/install-deps.sh"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}" CCACHE_NOHASHDIR=1
start=$(date +%s)
# Warnings are the g++ builds' business (CI builds those with -Werror); clang's extra ones
# must not stop the fuzzing. -O1 without NDEBUG keeps the Result asserts (-O0 builds in half
# the time but executes a tenth of the inputs); line tables are enough for symbolised stacks.
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DFIELDSYNC_FUZZ=ON -DFIELDSYNC_WERROR=OFF -DFIELDSYNC_BUILD_TESTS=OFF -DFIELDSYNC_BUILD_BENCH=OFF
cmake --build "$BUILD_DIR" -j "$JOBS" --target fuzz_targets
echo "fuzz: built in $(( $(date +%s) - start )) s"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
work="$(mktemp -d "${TMPDIR:-/tmp}/fieldsync-fuzz-XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$ARTIFACTS"
for t in "${TARGETS[@]}"; do
  if [ ! -x "$BUILD_DIR/fuzz/fuzz_$t" ] || [ ! -d "$ROOT/fuzz/corpus/$t" ]; then
    echo "fuzz.sh: unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

# One target: its exit status goes to $work/<target>/rc, its output to $work/<target>/log.
fuzz_one() {
  local t="$1" dict=()
  mkdir -p "$work/$t/new" "$work/$t/tmp"
  if [ -f "$ROOT/fuzz/dict/$t.dict" ]; then dict=(-dict="$ROOT/fuzz/dict/$t.dict"); fi
  # The first directory receives new inputs; the seed corpus is only read.
  local rc=0
  TMPDIR="$work/$t/tmp" "$BUILD_DIR/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER" -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t-" "${dict[@]}" \
    "$work/$t/new" "$ROOT/fuzz/corpus/$t" > "$work/$t/log" 2>&1 || rc=$?
  echo "$rc" > "$work/$t/rc"
}

# JOBS targets at a time (each is one process on one core).
echo "fuzz: ${TARGETS[*]} for ${SECONDS_PER} s each, $JOBS at a time"
running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${TARGETS[@]}"; do
  if [ "$(cat "$work/$t/rc" 2>/dev/null || echo missing)" = 0 ]; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t/log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$work/$t/log" | tail -1 || true)
    echo "fuzz: $t passed: $runs inputs, $cov, $(ls "$work/$t/new" | wc -l) new corpus entries"
  else
    echo "fuzz: $t FAILED; its log:" >&2
    tail -n 80 "$work/$t/log" >&2
    failed+=("$t")
  fi
done
echo "fuzz: done in $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]}; inputs kept in $ARTIFACTS" >&2
  exit 1
fi
