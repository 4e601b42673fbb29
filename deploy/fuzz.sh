#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan+libFuzzer) and runs each for
# TESSERA_FUZZ_SECONDS (default 20) seconds, seeded with tests/fuzz/corpus/<target>/
# and, when present, real files from ../shared. Fails on any crash, leak or timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${TESSERA_FUZZ_SECONDS:-20}
jobs=${TESSERA_JOBS:-$(nproc)}
shared=${TESSERA_SHARED:-$root/../shared}

CC=clang CXX=clang++ cmake -S "$root" -B "$root/build/fuzz" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTESSERA_WERROR=ON -DTESSERA_BUILD_FUZZERS=ON \
  -DTESSERA_BUILD_TESTS=OFF -DTESSERA_BUILD_BENCHMARKS=OFF -DTESSERA_WITH_CUDA=OFF >/dev/null
cmake --build "$root/build/fuzz" -j "$jobs" --target fuzzers

mapfile -t targets < <(find "$root/build/fuzz/tests/fuzz" -maxdepth 1 -type f -executable -name '*_fuzzer' | sort)
if ((${#targets[@]} == 0)); then
  echo "fuzz: no fuzz targets"
  exit 0
fi
artifacts="$root/build/fuzz/artifacts"
mkdir -p "$artifacts"
failed=()
for bin in "${targets[@]}"; do
  name=$(basename "$bin")
  work=$(mktemp -d)
  corpus_dirs=("$work")
  [[ -d "$root/tests/fuzz/corpus/$name" ]] && corpus_dirs+=("$root/tests/fuzz/corpus/$name")
  # Extra seeds from shared/ (small files only), chosen per target by its seeds list.
  if [[ -f "$root/tests/fuzz/corpus/$name.shared" && -d "$shared" ]]; then
    mkdir -p "$work/shared"
    while read -r rel; do
      [[ -n "$rel" && -f "$shared/$rel" ]] && head -c 1048576 "$shared/$rel" > "$work/shared/$(basename "$rel")"
    done < "$root/tests/fuzz/corpus/$name.shared"
    corpus_dirs+=("$work/shared")
  fi
  echo "== fuzz $name for ${seconds}s"
  # The whole log is kept: on a crash libFuzzer prints its final stats after the report, so
  # a plain tail would show healthy-looking stats and hide the failure.
  log="$artifacts/$name.log"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "${corpus_dirs[@]}" >"$log" 2>&1; then
    tail -n 4 "$log"
  else
    echo "fuzz: $name FAILED; report (full log: $log):"
    first=$(grep -n -m1 -E '^==[0-9]+==|ERROR: libFuzzer|runtime error' "$log" | cut -d: -f1 || true)
    if [[ -n "$first" ]]; then
      sed -n "${first},$((first + 119))p" "$log"
    else
      tail -n 60 "$log"
    fi
    ls -l "$artifacts" | grep -F "$name-" || true
    failed+=("$name")
  fi
  rm -rf "$work"
done
if ((${#failed[@]} > 0)); then
  echo "fuzz: failed: ${failed[*]} (reproduce: build/fuzz/tests/fuzz/<target> <artifact>)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran clean"
