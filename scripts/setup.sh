#!/usr/bin/env bash
# Installs the Debian packages vacc needs, only those that are missing (fast when all are
# present). Usage: scripts/setup.sh [--tests]   (--tests adds what the tests and benchmarks use)
set -euo pipefail

packages=(cmake ninja-build g++ libdnnl-dev nlohmann-json3-dev libcli11-dev)
if [[ "${1:-}" == "--tests" ]]; then
  # PyTorch (reference values, benchmarks) with OpenBLAS: without it PyTorch falls back to the
  # reference BLAS and is ~30x slower, which would make the benchmark comparison meaningless.
  packages+=(googletest libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-numpy
             libopenblas0-pthread)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
