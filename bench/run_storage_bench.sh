#!/usr/bin/env bash
# Storage benchmark: builds Release, generates the field-observation workload, runs
# storage_bench (fieldsync Store vs raw LMDB in the same run). Usage:
#   bash bench/run_storage_bench.sh [N=100000] [SINGLE=2000] [BATCH=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
SINGLE=${2:-2000}
BATCH=${3:-1000}
BUILD=${BUILD_DIR:-build-release}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFIELDSYNC_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target storage_bench >/dev/null
DATA=$(mktemp -d /tmp/fieldsync-bench-XXXXXX)
trap 'rm -rf "$DATA"' EXIT
python3 bench/workload/observations.py "$N" > "$DATA/observations.jsonl"
"$BUILD/bench/storage_bench" "$DATA/observations.jsonl" "$SINGLE" "$BATCH"
