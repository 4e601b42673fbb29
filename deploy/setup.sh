#!/usr/bin/env bash
# Installs every build and test dependency of tessera from Debian 12 packages.
# Idempotent: when everything is already installed it touches nothing.
# Usage: deploy/setup.sh [--with-test-tools]
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libabsl-dev            # Status/StatusOr, flags, strings
  libspdlog-dev libfmt-dev
  libcli11-dev           # subcommand-aware CLI parser
  nlohmann-json3-dev     # JSON (plans, configs, HTTP bodies)
  libcpp-httplib-dev     # HTTP server and client
  libpcre2-dev           # tokenizer pre-tokenizer regexes (Unicode classes, lookahead)
  libicu-dev             # tokenizer Unicode normalizers (NFC/NFKC...), case mapping
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin   # MPI collectives backend, mpirun
  libucx-dev ucx-utils         # KV-cache transfer engine, ucx_perftest
  libgloo-dev                  # non-MPI CPU collectives
  libopenblas-dev              # GEMM baseline in benchmarks only
  clang-format               # style check
)
if [[ "${1:-}" == "--with-test-tools" ]]; then
  packages+=(
    clang libclang-rt-14-dev   # libFuzzer targets
    iproute2                   # network namespaces for multi-host tests
    prometheus                 # promtool check metrics (server tests)
    nodejs                     # the npm `openai` client smoke test
  )
  # Debian's nodejs comes without npm; NodeSource's nodejs bundles it (and conflicts
  # with Debian's npm package), so add npm only where none is on PATH.
  if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
