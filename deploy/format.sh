#!/usr/bin/env bash
# Applies clang-format (Google base, .clang-format) to project C++ code;
# with --check, fails listing the files that are not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- \
  '*.h' '*.cc' '*.cu' '*.cuh' | grep -v '^build' || true)
if ((${#files[@]} == 0)); then exit 0; fi
if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
  done
  if ((${#bad[@]} > 0)); then
    echo "format: these files need deploy/format.sh:" "${bad[@]}"
    exit 1
  fi
  echo "format: ${#files[@]} files ok"
else
  clang-format --style=file -i "${files[@]}"
fi
