#!/usr/bin/env bash
# Configures and builds fieldsync with CMake + Ninja (ccache when installed).
# Usage: scripts/build.sh [BUILD_TYPE] [BUILD_DIR] [extra cmake -D options...]
#   BUILD_TYPE  Debug (default), Release, RelWithDebInfo
#   BUILD_DIR   default: build (Debug) or build-<type, lowercase>
# Environment: FIELDSYNC_WERROR=ON turns warnings into errors (CI does this);
#   JOBS (default: number of CPUs) parallel compile jobs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TYPE="${1:-Debug}"
case "$TYPE" in
  Debug|Release|RelWithDebInfo|MinSizeRel) ;;
  *) echo "build.sh: unknown build type '$TYPE' (Debug, Release, RelWithDebInfo)" >&2; exit 2 ;;
esac
if [ "$TYPE" = Debug ]; then DEFAULT_DIR=build; else DEFAULT_DIR="build-${TYPE,,}"; fi
DIR="${2:-$DEFAULT_DIR}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
shift $(( $# > 2 ? 2 : $# ))
JOBS="${JOBS:-$(nproc)}"

# ccache hits across checkouts of the tree in different directories.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}" CCACHE_NOHASHDIR=1

cmake -S "$ROOT" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE="$TYPE" \
  -DFIELDSYNC_WERROR="${FIELDSYNC_WERROR:-OFF}" "$@"
cmake --build "$DIR" -j "$JOBS"
