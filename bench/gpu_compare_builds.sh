#!/usr/bin/env bash
# Two builds of vacc on one GPU in one go: A (the baseline) and B (a change), each packed by
# gpu_bundle.sh. B's GPU tests run first; then cuda_ops_bench of both; then the fine-tune step
# against transformers with the faster of the two by OPS (B only if its tests passed); then
# Nsight Compute on that build's kernels named by NCU_KERNELS. One device call measures a
# kernel change against its baseline on the same machine, which a later call cannot (each
# call may get another GPU).
#
#   bench/gpu_compare_builds.sh A.tgz B.tgz [C.tgz ...]
#
# Bundles after B (variants C, D, ...) only have their op timings taken, beside A's and B's.
# The op timings run twice, in turns (A B C.. A B C..), so the spread between rounds shows
# what a difference must exceed to be more than noise.
# AFTER    steps of bench/gpu_checks.sh run afterwards on the build the step ran (e.g. "profile
#          races"; default none; a LEAN bundle has no tests for "races" to run)
# OPS      regex of the cuda_ops_bench rows compared (their ms summed; default: the tensor-core
#          attention, forward and backward)
# NCU_KERNELS  regex of kernel names for ncu (default the attention's; empty: no ncu)
# NCU_SKIP, NCU_COUNT  launches of those kernels to skip, then to profile (default 20, 5)
# LOGS     folder for the logs (default ./gpu-logs); the device tool returns 8 files, so pack
#          them if there are more
set -uo pipefail
a_bundle=${1:?usage: bench/gpu_compare_builds.sh A.tgz B.tgz}
b_bundle=${2:?usage: bench/gpu_compare_builds.sh A.tgz B.tgz}
logs=${LOGS:-gpu-logs}
ops=${OPS:-attention (forward|backward) bf16 flash_mma}
ncu_kernels=${NCU_KERNELS-flash_mma_(forward|dkdv|dq)_kernel}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$logs"
work=$(mktemp -d)
letters=(a b c d e f g h)
variants=()
for bundle in "$@"; do
  v=${letters[${#variants[@]}]:?at most ${#letters[@]} bundles}
  variants+=("$v")
  mkdir -p "$work/$v" && tar xzf "$bundle" -C "$work/$v" || exit 1
done
# The bundles load the same libraries; B's tokenizers serve them all.
export LD_LIBRARY_PATH=$work/b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[[ -d $work/b/vacc-home ]] && export VACC_HOME=$work/b/vacc-home

b_ok=1
for t in cuda_backend_test cuda_model_test cuda_trainer_test; do
  timeout 120 "$work/b/tests/unit_cuda/$t" --gtest_brief=1 >"$logs/b_$t.log" 2>&1
  rc=$?
  [[ $rc == 0 ]] || b_ok=0
  echo "=== B $t: exit $rc"
  grep -E "PASSED|FAILED|Failure|self-check|warning" "$logs/b_$t.log" | head -8
done

total_ms() { awk -v re="$ops" '$0 ~ re {for (i = 1; i < NF; ++i) if ($(i + 1) == "ms") s += $i} END {print s + 0}' "$1"; }
for round in 1 2; do
  for v in "${variants[@]}"; do
    # Round 1's log keeps the plain name the step and ncu lines below read.
    log=$logs/ops_$v.log
    [[ $round == 2 ]] && log=$logs/ops_${v}_2.log
    timeout 60 "$work/$v/bin/cuda_ops_bench" 1024 8 >"$log" 2>&1
    echo "=== ops ${v^^}, round $round: $(total_ms "$log") ms in the compared rows"
    grep -E "$ops" "$log"
  done
done
a_ms=$(total_ms "$logs/ops_a.log") b_ms=$(total_ms "$logs/ops_b.log")
best=a
if [[ $b_ok == 1 ]] && awk -v a="$a_ms" -v b="$b_ms" 'BEGIN {exit !(b > 0 && b < a)}'; then best=b; fi
echo "=== compared rows: A $a_ms ms, B $b_ms ms; B's tests passed: $b_ok; the step runs ${best^^}"

timeout 200 env PYTHONUNBUFFERED=1 python3 "$here/gpu_step_vs_transformers.py" \
  --vacc "$work/$best/bin/vacc" --json "$logs/step_$best.json" >"$logs/step_$best.log" 2>&1
tail -7 "$logs/step_$best.log"

if [[ -n $ncu_kernels ]]; then
  echo "=== ncu ${best^^}: $ncu_kernels"
  timeout 90 ncu --clock-control none -k "regex:$ncu_kernels" --launch-skip "${NCU_SKIP:-20}" \
    --launch-count "${NCU_COUNT:-5}" --section SpeedOfLight --section Occupancy \
    --section WarpStateStats "$work/$best/bin/cuda_ops_bench" 1024 8 >"$logs/ncu_$best.txt" 2>&1
  grep -E "^  [a-z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Block Limit (Registers|Shared)" \
    "$logs/ncu_$best.txt" | sed 's/  */ /g' | head -60
fi

if [[ -n ${AFTER:-} ]]; then
  echo "=== the checks of AFTER on ${best^^}"
  GPU_CHECKS=$AFTER LOGS=$logs "$here/gpu_checks.sh" "$work/$best"
fi
