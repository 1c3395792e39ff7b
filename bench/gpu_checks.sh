#!/usr/bin/env bash
# Everything issue 7 asks to run on a GPU, in one go, each step time-boxed so one hang cannot
# take the rest: the GPU tests, the op timings, the fine-tune step against transformers, then
# compute-sanitizer. Logs go to $LOGS (default ./gpu-logs).
#
#   bench/gpu_checks.sh BUILD_DIR     (BUILD_DIR/bin/vacc, BUILD_DIR/tests/unit_cuda/*, ...)
#
# GPU_CHECKS selects steps (default "info tests ops step sanitize"); more steps:
#   profile   vacc train --profile on the benchmark's model (device time per op)
#   routes    the benchmark's step with each bf16 attention route (VACC_ATTENTION)
#   autotune  the op timings and vacc's step with cuBLASLt's heuristic first choice
#             (VACC_MATMUL_AUTOTUNE=0) and with the timed choice (the default), twice each,
#             alternating
#   attn_tune the op timings and vacc's step with the attention backward's first dK/dV variant
#             (VACC_ATTENTION_AUTOTUNE=0) and with the timed choice (the default), twice each,
#             alternating; the tuning's log line says what each variant took
#   graphs    the step with (one GPU's default) and without CUDA graphs (--no-cuda-graphs), at
#             batch 1 and 8 (eager transformers as the peer; the launches weigh most at small
#             batches)
#   commands  vacc eval and vacc generate on gpu-1, and vacc profile --flavor gpu-1 --quick
#   decode    vacc generate's speed on the 0.5B preset (random weights, bf16, 256 new tokens,
#             greedy) with and without CUDA graphs (on by default on a GPU), and sampled (T 0.7,
#             top_p 0.9: the device's sample_rows) with them, twice each, alternating
#   races     compute-sanitizer racecheck and synccheck on the attention and reduction tests
#             (RACE_FILTER: other gtest filter; RACE_LIMIT: seconds per tool, default 200;
#             racecheck of the whole default filter took longer than 200 s on an H200)
# STEP_ARGS are more arguments for the step comparison. GPU_BUDGET_S (seconds, default none)
# bounds the whole script: each command's time limit shrinks to what is left, and commands that
# would get under 10 s are skipped with a line saying so, so that a device call with a fixed
# limit ends with every log it reached (put the steps in the order they matter).
set -uo pipefail
build=${1:?usage: bench/gpu_checks.sh BUILD_DIR}
logs=${LOGS:-gpu-logs}
steps=${GPU_CHECKS:-info tests ops step sanitize}
mkdir -p "$logs"
# A bundle of gpu_bundle.sh brings the tokenizers `vacc init` needs for the Qwen presets.
if [[ -d $build/vacc-home ]]; then export VACC_HOME=$build/vacc-home; fi
here=$(cd "$(dirname "$0")" && pwd)

run() {  # run NAME SECONDS COMMAND...: one step, its log, its time and exit status
  local name=$1 limit=$2
  shift 2
  if [[ -n ${GPU_BUDGET_S:-} ]]; then
    local left=$((GPU_BUDGET_S - SECONDS))
    if ((left < 10)); then
      echo "=== $name: skipped, ${left} s of GPU_BUDGET_S=$GPU_BUDGET_S left"
      return 124
    fi
    ((limit > left)) && limit=$left
  fi
  local t0=$SECONDS
  echo "=== $name: $*"
  timeout -k 5 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  return $rc
}

# alternate_setting NAME VAR "VALUES" OPS_PATTERN OPS_LINES STEP_PATTERN: cuda_ops_bench and
# vacc's step (the 0.5B benchmark's shape) with VAR set to each value in turn, two rounds,
# showing the lines of each log that match.
alternate_setting() {
  local name=$1 var=$2 values=$3 ops_pattern=$4 ops_lines=$5 step_pattern=$6
  local q05
  q05=$(mktemp -d)
  "$build/bin/vacc" init --preset qwen2.5-0.5b --config-only "$q05" >/dev/null
  for round in 1 2; do
    for value in $values; do
      run "ops_${name}${value}_$round" 60 env "$var=$value" "$build/bin/cuda_ops_bench" 1024 8
      grep -iE "$ops_pattern" "$logs/ops_${name}${value}_$round.log" | head -"$ops_lines"
      run "step_${name}${value}_$round" 120 env "$var=$value" "$build/bin/vacc" train \
        --model-config "$q05/config.json" --synthetic --batch 8 --seq-len 1024 --steps 12 \
        --dtype bf16 --flavor gpu-1
      grep -E "^Done|$step_pattern|error" "$logs/step_${name}${value}_$round.log"
    done
  done
}

for step in $steps; do
  case $step in
    info)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
      ;;
    tests)
      # The model against PyTorch (float64, on the CPU): the reference values first.
      ref=$(mktemp -d)
      python3 "$here/../tests/reference/make_model_reference.py" "$ref" >"$logs/model_reference_generate.log" 2>&1
      for t in cuda_backend_test cuda_model_test cuda_trainer_test model_reference_cuda_test; do
        [[ -x $build/tests/unit_cuda/$t ]] || continue
        VACC_MODEL_REFERENCE_DIR=$ref run "$t" 90 "$build/tests/unit_cuda/$t" --gtest_brief=1
        grep -E "PASSED|FAILED|SKIPPED|Failure|error|cuBLASLt has no algorithm|self-check|predicted|relative L2|rel err" \
          "$logs/$t.log" | head -40
      done
      ;;
    ops)
      run cuda_ops_bench 60 "$build/bin/cuda_ops_bench" 1024 8
      tail -40 "$logs/cuda_ops_bench.log"
      ;;
    step)
      run step_vs_transformers 420 env PYTHONUNBUFFERED=1 python3 "$here/gpu_step_vs_transformers.py" \
        --vacc "$build/bin/vacc" --json "$logs/step_vs_transformers.json" ${STEP_ARGS:-}
      tail -60 "$logs/step_vs_transformers.log"
      ;;
    graphs)
      for b in 1 8; do
        run "graphs_batch$b" 300 env PYTHONUNBUFFERED=1 python3 "$here/gpu_step_vs_transformers.py" \
          --vacc "$build/bin/vacc" --graphs --skip-compile --batch "$b" \
          --json "$logs/graphs_batch$b.json"
        grep -E "^vacc|^transformers|x throughput|Error|error" "$logs/graphs_batch$b.log" | tail -12
      done
      ;;
    profile)
      q05=$(mktemp -d)
      "$build/bin/vacc" init --preset qwen2.5-0.5b --config-only "$q05" >/dev/null
      run vacc_profile 90 "$build/bin/vacc" train --model-config "$q05/config.json" \
        --synthetic --batch 8 --seq-len 1024 --steps 3 --dtype bf16 --flavor gpu-1 --profile
      tail -45 "$logs/vacc_profile.log"
      ;;
    routes)
      q05=$(mktemp -d)
      "$build/bin/vacc" init --preset qwen2.5-0.5b --config-only "$q05" >/dev/null
      for route in flash_mma gemm; do
        run "route_$route" 120 env VACC_ATTENTION=$route "$build/bin/vacc" train \
          --model-config "$q05/config.json" --synthetic --batch 8 --seq-len 1024 --steps 6 \
          --dtype bf16 --flavor gpu-1
        grep -E "^Done|attention|error" "$logs/route_$route.log" | head -5
      done
      ;;
    autotune)
      alternate_setting autotune VACC_MATMUL_AUTOTUNE "0 8" "matmul|product|proj" 16 \
        "Kernels timed"
      ;;
    attn_tune)
      alternate_setting attn_tune VACC_ATTENTION_AUTOTUNE "0 1" \
        "^attention (forward|backward) bf16 flash_mma|dK/dV" 6 "dK/dV|Kernels timed"
      ;;
    decode)
      q05w=$(mktemp -d)/q05
      "$build/bin/vacc" init --preset qwen2.5-0.5b --seed 1 "$q05w" >/dev/null
      for round in 1 2; do
        for variant in greedy graphs sampled; do
          flags=(--no-cuda-graphs --temperature 0)
          [[ $variant == greedy ]] || flags=(--cuda-graphs --temperature 0)
          [[ $variant == sampled ]] && flags=(--cuda-graphs --temperature 0.7 --top-p 0.9)
          name="decode_${variant}_$round"
          run "$name" 120 "$build/bin/vacc" generate --model "$q05w" --prompt "Once upon a time" \
            --max-new-tokens 256 --dtype bf16 --flavor gpu-1 "${flags[@]}"
          grep -E "Generated|CUDA graphs|error|warning" "$logs/$name.log"
        done
      done
      ;;
    commands)
      tiny=$(mktemp -d)/tiny
      "$build/bin/vacc" init --preset tiny --seed 3 "$tiny" >/dev/null
      printf '{"text": "The capital of France is Paris."}\n%.0s' 1 2 3 4 >"$tiny.jsonl"
      for flavor in cpu-1 gpu-1; do  # the same loss on both
        run "eval_$flavor" 60 "$build/bin/vacc" eval --model "$tiny" --data "$tiny.jsonl" \
          --seq-len 32 --json --flavor $flavor
        cat "$logs/eval_$flavor.log"
      done
      run generate_gpu 60 "$build/bin/vacc" generate --model "$tiny" --prompt "Hello" \
        --max-new-tokens 8 --temperature 0 --flavor gpu-1
      tail -3 "$logs/generate_gpu.log"
      run vacc_profile_gpu 120 "$build/bin/vacc" profile --flavor gpu-1 --dtype bf16 --quick \
        --out "$logs/gpu-1-profile.json"
      tail -30 "$logs/vacc_profile_gpu.log"
      ;;
    races)
      for tool in racecheck synccheck; do
        run "$tool" "${RACE_LIMIT:-200}" compute-sanitizer --tool $tool --print-limit 20 \
          "$build/tests/unit_cuda/cuda_backend_test" --gtest_brief=1 \
          --gtest_filter="${RACE_FILTER:-*Attention*:*RmsNorm*:*Classifier*:*SumOfSquares*:*BiasBackward*:*Swiglu*}"
        tail -8 "$logs/$tool.log"
      done
      ;;
    sanitize)
      run memcheck 150 compute-sanitizer --tool memcheck --print-limit 20 \
        "$build/tests/unit_cuda/cuda_backend_test" --gtest_brief=1
      tail -25 "$logs/memcheck.log"
      run memcheck_model 150 compute-sanitizer --tool memcheck --print-limit 20 \
        "$build/tests/unit_cuda/cuda_model_test" --gtest_brief=1
      tail -10 "$logs/memcheck_model.log"
      ;;
    *) echo "unknown step $step" >&2 ;;
  esac
done
