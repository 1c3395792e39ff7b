#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs every test (CTest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh
cd build
ctest --output-on-failure -j2 --timeout 900
