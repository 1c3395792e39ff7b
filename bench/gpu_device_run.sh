#!/usr/bin/env bash
# The GPU machine's side of a device call: unpacks a bench/gpu_bundle.sh bundle into g/, puts
# the CUDA library folders of the machine's PyTorch on LD_LIBRARY_PATH (the machine has them but
# not this project's Debian packages), runs bench/gpu_checks.sh once per ROUND, each with its
# own time budget, and packs the logs into $OUT/logs.tgz, also when a round fails (the device
# tool returns at most 8 files). Put the rounds in the order they matter.
#
#   bench/gpu_device_run.sh BUNDLE.tgz "STEPS:SECONDS" ...
#   e.g. bench/gpu_device_run.sh gpu-carry/b.tgz "info tests step ops decode:320" "races:60"
# Other variables (RACE_FILTER, RACE_LIMIT, STEP_ARGS) pass through to gpu_checks.sh.
set -uo pipefail
bundle=${1:?usage: bench/gpu_device_run.sh BUNDLE.tgz "STEPS:SECONDS" ...}
shift
here=$(cd "$(dirname "$0")" && pwd)
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
libs=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH=$PWD/g/lib:${libs}/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p g && tar xzf "$bundle" -C g || exit 1
export LOGS=${LOGS:-/tmp/gpu-logs}
mkdir -p "$LOGS"
trap 'tar czf "${OUT:-.}/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"' EXIT
for round in "$@"; do
  GPU_BUDGET_S=${round##*:} GPU_CHECKS=${round%:*} "$here/gpu_checks.sh" g
done
echo "gpu_device_run: ${SECONDS} s"
