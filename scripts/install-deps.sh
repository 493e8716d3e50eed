#!/usr/bin/env bash
# Installs fieldsync's build and test dependencies from Debian 12 packages.
# Boost must be the versioned 1.81 component packages: the unversioned
# libboost-*-dev packages pull 1.74 and conflict with them.
# clang + libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) are for scripts/fuzz.sh;
# lld is the linker where installed (cmake/FieldsyncOptions.cmake).
# build-essential, dpkg-dev and debhelper build the Debian package (debian/,
# tests/package/test_package.sh).
# postgresql is the server the mirror's tests start in a temporary directory (libpq-dev builds
# the mirror, hub/).
# libtomlplusplus-dev (toml++) parses the config file (header-only).
# libqrencode-dev draws invite codes as QR codes for the status page (ipc/qr_svg.cpp).
# chromium (headless) and zbar-tools (zbarimg) run the browser test
# (tests/integration/test_browser.py: puppeteer-core drives the system's chromium, nothing
# downloads a browser; zbarimg decodes the status page's QR code from a screenshot).
# nodejs + npm run the API description's lint (scripts/lint-api.sh), and nodejs the tests of the
# JavaScript client (tests/clients: clients/js); python3-yaml and
# python3-jsonschema check real answers against it (tests/integration/test_openapi_responses.py).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  cmake ninja-build pkg-config g++ ccache lld git clang-format
  clang libclang-rt-14-dev
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-program-options1.81-dev
  libssl-dev liblmdb-dev libspdlog-dev libzstd-dev libxxhash-dev libvips-dev libtomlplusplus-dev catch2
  libavahi-client-dev libsdbus-c++-dev libsystemd-dev libpq-dev libqrencode-dev
  dbus avahi-daemon avahi-utils iproute2 python3 python3-dbusmock systemd
  build-essential dpkg-dev debhelper postgresql
  nodejs python3-yaml python3-jsonschema chromium zbar-tools
)
# Debian's npm package; a Node.js from elsewhere (e.g. NodeSource's nodejs) brings its own npm
# and conflicts with it.
if ! command -v npm >/dev/null 2>&1; then PKGS+=(npm); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
