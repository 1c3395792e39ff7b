#!/usr/bin/env bash
# Packs what bench/gpu_checks.sh runs, built here, for a GPU machine that has the CUDA
# libraries (cuBLASLt, NCCL, the runtime) but not this project's Debian dependencies: the
# binaries in BUILD_DIR's layout plus every shared library they load that is neither glibc's,
# the compiler's nor CUDA's. Configure BUILD_DIR with -DVACC_NATIVE=OFF (the GPU machine's CPU
# may lack this one's instructions) and -DCMAKE_CUDA_ARCHITECTURES=90 for an H100/H200.
#
#   bench/gpu_bundle.sh BUILD_DIR OUT.tgz
# LEAN=1 packs the two binaries alone: a baseline or variant for bench/gpu_compare_builds.sh,
# which runs every bundle on B's libraries and tokenizers (the device call's tree is 64 MiB).
# There: mkdir g && tar xzf OUT.tgz -C g && LD_LIBRARY_PATH=g/lib:<CUDA lib dirs> bench/gpu_checks.sh g
set -euo pipefail
build=${1:?usage: bench/gpu_bundle.sh BUILD_DIR OUT.tgz}
out=${2:?usage: bench/gpu_bundle.sh BUILD_DIR OUT.tgz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/tests/unit_cuda" "$stage/lib"
cp "$build/bin/vacc" "$build/bin/cuda_ops_bench" "$stage/bin/"
if [[ ${LEAN:-0} == 1 ]]; then
  tar czf "$out" -C "$stage" .
  echo "$out: $(du -h "$out" | cut -f1) (binaries only)"
  exit 0
fi
cp "$build/tests/unit_cuda/cuda_backend_test" "$build/tests/unit_cuda/cuda_model_test" \
   "$build/tests/unit_cuda/cuda_trainer_test" "$build/tests/unit_cuda/model_reference_cuda_test" \
   "$stage/tests/unit_cuda/"
for binary in "$stage"/bin/* "$stage"/tests/unit_cuda/*; do
  ldd "$binary" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    libcudart.so*|libcublas*|libnccl.so*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done
# The tokenizers `vacc init` attaches to the Qwen presets (VACC_HOME there: gpu_checks.sh).
tokenizers=${VACC_HOME:-$HOME/.vacc}/cache/tokenizers
if [[ -d $tokenizers ]]; then
  mkdir -p "$stage/vacc-home/cache"
  cp -r "$tokenizers" "$stage/vacc-home/cache/"
fi
tar czf "$out" -C "$stage" .
echo "$out: $(du -h "$out" | cut -f1) ($(ls "$stage/lib" | wc -l) libraries)"
