#!/usr/bin/env bash
# Installs dependencies, builds and runs every test that can run on this machine.
#   1. Release build with warnings as errors; the whole ctest suite.
#   2. AddressSanitizer + UBSan build of the unit tests (label 'unit').
#   3. clang-format check of project code.
#   4. libFuzzer targets, each run for a bounded time (deploy/fuzz.sh).
# Environment: TESSERA_JOBS (parallel jobs, default nproc), TESSERA_SKIP_ASAN=1,
# TESSERA_SKIP_FUZZ=1, TESSERA_FUZZ_SECONDS,
# TESSERA_CTEST_ARGS (extra ctest arguments, e.g. "-L unit").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=${TESSERA_JOBS:-$(nproc)}

"$root/deploy/setup.sh" --with-test-tools

echo "== format check"
"$root/deploy/format.sh" --check

echo "== release build"
cmake -S "$root" -B "$root/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTESSERA_WERROR=ON
cmake --build "$root/build/release" -j "$jobs"

if [[ "${TESSERA_SKIP_ASAN:-0}" != "1" ]]; then
  echo "== address+undefined sanitizer build (unit tests)"
  # CUDA code is not sanitized; the sanitizer build covers host code.
  cmake -S "$root" -B "$root/build/asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTESSERA_WERROR=ON -DTESSERA_SANITIZE=address,undefined -DTESSERA_WITH_CUDA=OFF \
    -DTESSERA_BUILD_BENCHMARKS=OFF
  cmake --build "$root/build/asan" -j "$jobs"
  (cd "$root/build/asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest -L unit -LE slow --output-on-failure -j "$jobs")
fi

if [[ "${TESSERA_SKIP_FUZZ:-0}" != "1" ]]; then
  echo "== fuzz targets (libFuzzer, bounded time)"
  "$root/deploy/fuzz.sh"
fi

echo "== tests (release)"
cd "$root/build/release"
# shellcheck disable=SC2086
ctest --output-on-failure -j "$jobs" ${TESSERA_CTEST_ARGS:-}
