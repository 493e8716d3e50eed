#!/usr/bin/env bash
# Cross-builds fieldsyncd and syncctl for 64-bit ARM (aarch64: a Raspberry Pi 3, 4 or 5 with a
# 64-bit OS, other arm64 boards) on a Debian 12 amd64 machine. Tests are not built or run.
#
#   scripts/cross-arm64.sh [BUILD_TYPE] [BUILD_DIR]    (default: Release build-arm64)
#
# 1. Installs the build machine's tools from Debian: crossbuild-essential-arm64 (the
#    aarch64-linux-gnu-g++ cross compiler), mmdebstrap, cmake, ninja-build, pkg-config.
# 2. Makes an arm64 sysroot, BUILD_DIR/sysroot (or $FIELDSYNC_ARM64_SYSROOT): the arm64
#    Debian 12 packages of the libraries the build needs (the list of scripts/install-deps.sh,
#    without the test tools), downloaded and unpacked with `mmdebstrap --variant=extract
#    --arch=arm64` (nothing is run in it; no emulator needed). It is made once and reused until
#    the package list below changes; delete it to refresh it.
# 3. Configures BUILD_DIR with cmake/aarch64-linux-gnu.cmake and builds fieldsyncd and syncctl,
#    then checks with `file` that both are aarch64 executables.
#
# Why a sysroot and not `dpkg --add-architecture arm64` with the :arm64 -dev packages: two of
# them, libvips-dev and libpq-dev, are not "Multi-Arch: same" in Debian 12, so installing their
# :arm64 versions removes the amd64 ones (and the native build with them). The sysroot leaves
# the machine's packages as they are: only the amd64 tools of step 1 are installed.
#
# Environment: JOBS (default: number of CPUs); FIELDSYNC_ARM64_SYSROOT; DEBIAN_MIRROR (default
# http://deb.debian.org/debian) and DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security);
# FIELDSYNC_WERROR (default OFF): with ON, Release fails in config/config_loader.cpp on a false
# -Wrestrict from GCC 12's std::string code at -O3 for aarch64 (GCC bug 105651); the warning is
# still printed.
# Needs root (or sudo) for apt-get and mmdebstrap; about 1.5 GB of disk for the sysroot.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TYPE="${1:-Release}"
case "$TYPE" in
  Debug|Release|RelWithDebInfo|MinSizeRel) ;;
  *) echo "cross-arm64.sh: unknown build type '$TYPE' (Debug, Release, RelWithDebInfo)" >&2; exit 2 ;;
esac
DIR="${2:-build-arm64}"
case "$DIR" in /*) ;; *) DIR="$ROOT/$DIR" ;; esac
SYSROOT="${FIELDSYNC_ARM64_SYSROOT:-$DIR/sysroot}"
JOBS="${JOBS:-$(nproc)}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- 1. tools on the build machine (amd64) ---
HOST_PKGS=(crossbuild-essential-arm64 mmdebstrap cmake ninja-build pkg-config file ccache)
missing=()
for p in "${HOST_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross-arm64: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. the arm64 sysroot ---
# The libraries of fieldsyncd and syncctl (scripts/install-deps.sh, less catch2 and the tools),
# and the C and C++ runtime the cross compiler links against inside the sysroot.
ARM64_PKGS=(
  libc6-dev libstdc++-12-dev
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-program-options1.81-dev
  libssl-dev liblmdb-dev libspdlog-dev libzstd-dev libxxhash-dev libvips-dev
  libavahi-client-dev libsdbus-c++-dev libsystemd-dev libpq-dev libqrencode-dev
)
stamp="$SYSROOT/.fieldsync-sysroot"
want="bookworm ${ARM64_PKGS[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # Only ever delete a sysroot this script made (or nothing).
  if [ -e "$SYSROOT" ] && [ ! -f "$stamp" ] && [ -n "$(ls -A "$SYSROOT" 2>/dev/null)" ]; then
    echo "cross-arm64: $SYSROOT exists and is not a sysroot made by this script" >&2
    exit 1
  fi
  echo "cross-arm64: making the arm64 sysroot in $SYSROOT"
  $SUDO rm -rf "$SYSROOT" "$SYSROOT.tmp"
  mkdir -p "$(dirname "$SYSROOT")"
  include="$(IFS=,; echo "${ARM64_PKGS[*]}")"
  $SUDO mmdebstrap --quiet --variant=extract --arch=arm64 --include="$include" bookworm \
    "$SYSROOT.tmp" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main"
  # apt's lists and the downloaded .debs are not needed to build.
  $SUDO rm -rf "$SYSROOT.tmp/var/lib/apt/lists" "$SYSROOT.tmp/var/cache/apt"
  # Some -dev packages link libX.so absolutely (/lib/aarch64-linux-gnu/libX.so.N): that would
  # name the build machine's file. Make such links relative, inside the sysroot.
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    $SUDO ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT.tmp$target")" "$link"
  done < <(find "$SYSROOT.tmp/usr" "$SYSROOT.tmp/lib" -type l -lname '/*' -print0)
  echo "$want" | $SUDO tee "$SYSROOT.tmp/.fieldsync-sysroot" >/dev/null
  $SUDO mv "$SYSROOT.tmp" "$SYSROOT"
fi

# --- 3. configure and build ---
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(dirname "$ROOT")}" CCACHE_NOHASHDIR=1
cmake -S "$ROOT" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE="$TYPE" \
  -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DFIELDSYNC_ARM64_SYSROOT="$SYSROOT" \
  -DFIELDSYNC_BUILD_TESTS=OFF -DFIELDSYNC_BUILD_BENCH=OFF -DFIELDSYNC_LLD=OFF \
  -DFIELDSYNC_WERROR="${FIELDSYNC_WERROR:-OFF}"
cmake --build "$DIR" -j "$JOBS" --target fieldsyncd syncctl

bad=0
for exe in "$DIR/daemon/fieldsyncd" "$DIR/cli/syncctl"; do
  what="$(file -b "$exe")"
  echo "cross-arm64: $exe: $what"
  case "$what" in
    "ELF 64-bit LSB "*"ARM aarch64"*) ;;
    *) echo "cross-arm64: $exe is not an aarch64 executable" >&2; bad=1 ;;
  esac
done
exit "$bad"
