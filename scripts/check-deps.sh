#!/usr/bin/env bash
# Checks that dependencies between fieldsync's folders go one way, and that each outside
# library's headers are included only in the folder that wraps it. Run by .ci/run.
#   folder -> the folders its code may include ("X/..." headers), itself always allowed
# Exit status 1 with every violation listed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -A ALLOWED=(
  [common]=""
  [crypto]="common"
  [media]="common"
  [storage]="common crypto"
  [config]="common crypto storage"
  [sync]="common crypto storage config"
  [transports]="common crypto config"
  [bundle]="common crypto storage config sync"
  [peers]="common crypto storage config sync transports"
  [discovery]="common crypto storage config sync"
  [ipc]="common crypto storage config sync transports peers bundle discovery"
  [hub]="common crypto storage config"
  [cli]="common config ipc"
  [systemd]="common"
  [daemon]="common crypto storage config sync transports bundle peers discovery ipc hub systemd media"
)
# <header prefix>=<the only folder that may include it>
CONFINED=(
  "lmdb.h=storage"
  "xxhash.h=storage"
  "zstd.h=common"
  "vips/=media"
  "boost/beast=ipc"
  "openssl/=crypto"
  "sdbus-c++/=transports"
  "avahi-client/=discovery"
  "avahi-common/=discovery"
  "pqxx=hub"
  "libpq-fe.h=hub"
  "systemd/=systemd"
  "qrencode.h=ipc"
)

bad=0
for dir in "${!ALLOWED[@]}"; do
  [ -d "$dir" ] || continue
  allowed=" $dir ${ALLOWED[$dir]} "
  while IFS=: read -r file line inc; do
    dep="${inc#*\"}"
    dep="${dep%%/*}"
    if [[ "$allowed" != *" $dep "* ]]; then
      echo "check-deps: $file:$line: $dir/ must not include $dep/ (${inc//[[:space:]]/ })"
      bad=1
    fi
  done < <(git grep -nE '^#include "[a-z_]+/' -- "$dir/*.cpp" "$dir/*.hpp" || true)
done
for rule in "${CONFINED[@]}"; do
  prefix="${rule%%=*}"
  home="${rule#*=}"
  while IFS=: read -r file line _; do
    top="${file%%/*}"
    case "$top" in tests|bench|fuzz|"$home") continue ;; esac
    echo "check-deps: $file:$line: <$prefix...> belongs in $home/ only"
    bad=1
  done < <(git grep -nE "^#include <$prefix" -- '*.cpp' '*.hpp' || true)
done
# Every top-level folder with C++ code has a row above.
for dir in $(git ls-files '*.cpp' '*.hpp' | cut -d/ -f1 | sort -u); do
  case "$dir" in tests|bench|fuzz|*.cpp|*.hpp) continue ;; esac
  if [ -z "${ALLOWED[$dir]+x}" ]; then
    echo "check-deps: $dir/ has no row in scripts/check-deps.sh: say what it may include"
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then exit 1; fi
echo "check-deps: dependencies go one way"
