#!/usr/bin/env bash
# Fails when a folder includes a folder it must not depend on.
set -u
root=$1
fail=0
check() {  # folder, forbidden-include regex
  local hits
  hits=$(grep -rnE "#include [<\"]($2)" "$root/$1" --include='*.h' --include='*.cc' \
         --include='*.cu' --include='*.cuh' 2>/dev/null)
  if [[ -n "$hits" ]]; then
    echo "layering violation: $1/ must not include ($2):"
    echo "$hits"
    fail=1
  fi
}
check base 'kernels/|comm/|placement/|runtime/'
check kernels 'comm/|placement/|runtime/'
check comm 'kernels/|placement/|runtime/'
check placement 'kernels/|comm/|runtime/|cuda|mpi\.h|ucp/|nccl'
if [[ $fail -eq 0 ]]; then echo "layering: ok"; fi
exit $fail
