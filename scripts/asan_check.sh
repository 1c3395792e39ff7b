#!/usr/bin/env bash
# Builds vacc with AddressSanitizer into BUILD_DIR and runs the corrupt-input checks with it.
# usage: scripts/asan_check.sh BUILD_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-asan}"
# Without the CUDA backend: the checks run on CPU flavors (a GPU flavor's error on a machine
# without one gets the same kind of message), and the CUDA sources took 484 of the 2126 s of
# this build's compile steps (2026-11-27).
# -Og -g1 (line tables, enough for ASan's reports), with assertions on: this build is most of
# the test's time, and it compiles in a third of -O2 -g's (plan_command.cpp: 11.9 s against
# 33.5 s); the checks themselves take seconds either way.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-Og -g1" \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" \
  -DVACC_BUILD_TESTS=OFF -DVACC_BUILD_BENCH=OFF -DVACC_CUDA=OFF >/dev/null
ninja -C "$build" vacc >/dev/null
# Leaks are not the subject here (a failing command exits with its caches alive); memory
# errors abort with an ASan report, which the checks see as a wrong exit status.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99"
exec /usr/bin/python3 "$root/tests/e2e/corrupt_inputs_test.py" "$build/bin/vacc"
