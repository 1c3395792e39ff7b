#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what is missing, build, and run a
# short fine-tune of a small Qwen2-shaped model on synthetic data on the default accelerator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
mkdir -p out
./build/bin/vacc train --model-config configs/tiny-qwen2.json --synthetic \
  --batch 8 --seq-len 128 --steps 30 --lr 3e-3 --warmup-steps 5 --lr-schedule cosine \
  --metrics-out out/demo-metrics.jsonl "$@"
