#!/usr/bin/env bash
# Checks (default) or fixes the C++ formatting against .clang-format.
# Usage: scripts/format.sh [--fix] [files...]   (default: every tracked .cpp/.hpp)
# Exit status 1 in check mode when a file would change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=check
if [ "${1:-}" = "--fix" ]; then MODE=fix; shift; fi
if [ $# -gt 0 ]; then
  # Only C++ sources: clang-format would rewrite a Markdown or Python file as if it were C++.
  FILES=()
  for f in "$@"; do
    case "$f" in
      *.cpp | *.hpp | *.h | *.cc) FILES+=("$f") ;;
      *) echo "format.sh: skipping $f (not a C++ source)" >&2 ;;
    esac
  done
else
  mapfile -t FILES < <(git ls-files '*.cpp' '*.hpp')
fi
[ ${#FILES[@]} -gt 0 ] || { echo "format.sh: no files"; exit 0; }
CF="${CLANG_FORMAT:-clang-format}"
command -v "$CF" >/dev/null || { echo "format.sh: $CF not found (apt-get install clang-format)" >&2; exit 2; }
if [ "$MODE" = fix ]; then
  "$CF" -i --style=file "${FILES[@]}"
  echo "format.sh: formatted ${#FILES[@]} files"
else
  bad=()
  for f in "${FILES[@]}"; do
    "$CF" --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if [ ${#bad[@]} -gt 0 ]; then
    printf 'format.sh: needs formatting (scripts/format.sh --fix FILE): %s\n' "${bad[@]}"
    exit 1
  fi
  echo "format.sh: ${#FILES[@]} files formatted correctly"
fi
