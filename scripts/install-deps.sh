#!/usr/bin/env bash
# Installs the Debian 12 packages Kiln needs to build, test and run its demo.
# Idempotent: asks apt only for what is missing, so a second run costs a second.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config make clang libclang-rt-14-dev
  # C++ libraries
  libabsl-dev libboost-dev libboost-system-dev nlohmann-json3-dev libsqlite3-dev sqlite3
  libspdlog-dev libcli11-dev libyaml-cpp-dev libarchive-dev libssl-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # LibTorch, c10d Gloo, and a fast BLAS (Debian picks reference BLAS otherwise: 27x slower)
  libtorch-dev libgloo-dev libopenblas0-pthread
  # tcmalloc for kilnd and kiln-serve (less CPU per request than glibc's malloc)
  libtcmalloc-minimal4
  # Python side of the workload contract, tests and data
  python3-torch python3-numpy python3-pytest dataset-fashion-mnist python3-optuna python3-cmaes python3-requests
  # tools the tests and benchmarks drive
  curl procps
  wrk python3-flask gunicorn
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
