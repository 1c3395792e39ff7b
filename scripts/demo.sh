#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install what is missing, build, create the
# tiny Qwen2-shaped model (with the real Qwen tokenizer), fine-tune it on the instruction
# dataset in examples/data, show the loss falling, and generate from the result.
# Extra arguments go to `vacc train` (e.g. --dtype bf16 --epochs 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
vacc=build/bin/vacc
mkdir -p out

echo "== vacc init: a randomly initialised tiny Qwen2 model in Hugging Face format"
$vacc init --preset tiny --seed 0 out/tiny

echo "== vacc train: fine-tune on examples/data/instructions.jsonl"
$vacc train --model out/tiny --data examples/data/instructions.jsonl \
  --batch 8 --seq-len 96 --epochs 15 --lr 4e-3 --warmup-steps 10 --lr-schedule cosine \
  --eval-fraction 0.05 --eval-every 50 --save out/tiny-ft --metrics-out out/tiny-ft/metrics.jsonl "$@"

echo "== vacc generate: ask the fine-tuned model"
for prompt in "What is the capital of Portugal?" "What is the capital of Japan?"; do
  echo "> $prompt"
  $vacc generate --model out/tiny-ft --alpaca --prompt "$prompt" --temperature 0 --max-new-tokens 24
done
echo "(loss curve: out/tiny-ft/loss_curve.svg, metrics: out/tiny-ft/metrics.jsonl)"
