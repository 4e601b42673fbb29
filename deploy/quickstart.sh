#!/usr/bin/env bash
# Installs dependencies, builds tessera (Release) and runs the main job on the
# built-in demo model: generated text and a throughput line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
"$root/deploy/setup.sh"
cmake -S "$root" -B "$root/build/release" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$root/build/release" -j "${TESSERA_JOBS:-$(nproc)}" --target tessera
"$root/build/release/runtime/tessera" run --prompt "The meaning of life is" --max-tokens 48 --stats "$@"
