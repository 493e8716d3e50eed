#!/usr/bin/env bash
# Every library the build needs (the lib*-dev packages of scripts/install-deps.sh, less the
# fuzzing runtime) is a Build-Depends of debian/control, so the package builds on a clean
# builder too.
# Usage: build_depends_test.sh SOURCE_DIR
set -euo pipefail
src="$1"
deps="$(sed -n '/^Build-Depends:/,/^[A-Z]/p' "$src/debian/control" | tr ',' '\n' |
        sed 's/^Build-Depends://; s/([^)]*)//; s/^[[:space:]]*//; s/[[:space:]]*$//')"
libs="$(sed -n '/^PKGS=(/,/^)/p' "$src/scripts/install-deps.sh" | tr ' ' '\n' |
        grep -E '^lib.*-dev$' | grep -v '^libclang-rt-')"
missing=()
for lib in $libs; do
  grep -qx "$lib" <<<"$deps" || missing+=("$lib")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "FAIL: debian/control's Build-Depends lacks ${missing[*]} (in scripts/install-deps.sh)"
  exit 1
fi
echo "ok: the $(wc -w <<<"$libs") libraries of scripts/install-deps.sh are Build-Depends"
