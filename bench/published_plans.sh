#!/usr/bin/env bash
# Re-runs every `vacc plan` command of docs/planner-vs-published.md: for each published,
# hand-tuned training run, the planner's own choice (a full search) and its prediction for the
# published split (every dimension pinned).
#
#   bench/published_plans.sh [path/to/vacc]     (default: build/bin/vacc)
#
# Run it from the repository root. Model configs are in configs/models/, clusters in
# configs/clusters/. Where the published split does not fit vacc's memory model (vacc keeps
# more activations than the published systems do), its step time is predicted on a copy of the
# flavor whose device memory is raised (the cost model does not depend on memory): those rows
# are marked "cost only". Environment: SHOW (rows of each table, default 5), SEARCH=0 skips the
# full searches (they take from seconds to a few minutes each on a 2-core machine).
set -euo pipefail

VACC=${1:-build/bin/vacc}
SHOW=${SHOW:-5}
SEARCH=${SEARCH:-1}
M=configs/models
C=configs/clusters
[ -x "$VACC" ] || { echo "no vacc binary at $VACC" >&2; exit 1; }
[ -d "$M" ] && [ -d "$C" ] || { echo "run from the repository root" >&2; exit 1; }

BIG=$(mktemp -d)
trap 'rm -rf "$BIG"' EXIT
# Cost-only copies of the flavors: the same cluster, device memory raised.
for f in "$C"/*.json; do
  sed 's/"memory_gib": *[0-9.]*/"memory_gib": 100000/' "$f" > "$BIG/$(basename "$f")"
done

search() {  # title, then vacc plan arguments
  local title=$1; shift
  [ "$SEARCH" = 1 ] || return 0
  echo
  echo "=== $title: vacc's choice"
  echo "+ vacc plan $*"
  local t0=$(date +%s) rc=0 out
  out=$("$VACC" plan "$@" --show "$SHOW" 2>&1) || rc=$?
  printf '%s\n' "$out" | sed -n '/^Accelerator/,$p'
  [ $rc = 0 ] || printf '%s\n' "$out" | grep 'error' || true
  echo "(search took $(( $(date +%s) - t0 )) s$([ $rc = 0 ] || echo ", no feasible plan: exit status $rc"))"
}

pinned() {  # title, then vacc plan arguments (with --parallel pinning every dimension)
  local title=$1; shift
  echo
  echo "=== $title"
  echo "+ vacc plan $*"
  "$VACC" plan "$@" | sed -n '/^Chosen/,$p'
}

# 1. GPT-3 175B on 384 A100 (Megatron-LM, Narayanan et al. 2021, Table 2): tp8 pp12 dp4,
#    micro-batch 1, full recomputation, no distributed optimizer; 153 TFLOP/s incl. recompute.
A=(--model-config $M/gpt3-175b.json --flavor-file $C/selene-a100-384.json --batch 1536 --seq-len 2048)
search "GPT-3 175B, 384 A100" "${A[@]}"
pinned "GPT-3 175B, 384 A100: published split" "${A[@]}" \
  --parallel dp=4,pp=12,tp=8,microbatches=384,recompute=full,zero=0

# 2. 530B on 2520 A100 (Narayanan et al. 2021, Table 1): tp8 pp35 dp9, batch 2520;
#    163 TFLOP/s incl. recompute (interleaved schedule; micro-batch 1 assumed).
A=(--model-config $M/megatron-530b.json --flavor-file $C/selene-a100-2520.json --batch 2520 --seq-len 2048)
search "530B, 2520 A100" "${A[@]}"
pinned "530B, 2520 A100: published split" "${A[@]}" \
  --parallel dp=9,pp=35,tp=8,microbatches=280,recompute=full,zero=0

# 3. BLOOM-176B on 384 A100 (BigScience tr11): tp4 pp12 dp8, micro-batch 2, GBS 2048,
#    full recomputation, BF16Optimizer (ZeRO-1); about 150 TFLOP/s incl. recompute.
A=(--model-config $M/bloom-176b.json --flavor-file $C/jeanzay-a100-384.json --batch 2048 --seq-len 2048)
search "BLOOM-176B, 384 A100" "${A[@]}"
pinned "BLOOM-176B, 384 A100: published split (needs 70.7 GiB: over vacc's 80% cap, fits --usable-memory 1)" \
  "${A[@]}" --usable-memory 1 --parallel dp=8,pp=12,tp=4,microbatches=128,recompute=full,zero=1

# 4. OPT-175B on 992 A100 (Zhang et al. 2022): Megatron TP 8 x FSDP 124; ~2M tokens per batch
#    (992 x 2048 assumed: 8 sequences per FSDP rank); up to 147 TFLOP/s per GPU.
A=(--model-config $M/opt-175b.json --flavor-file $C/opt-a100-992.json --batch 992 --seq-len 2048)
search "OPT-175B, 992 A100" "${A[@]}"
pinned "OPT-175B, 992 A100: published split (cost only: vacc's memory model gives 87.9 GiB)" \
  --model-config $M/opt-175b.json --flavor-file "$BIG/opt-a100-992.json" --batch 992 --seq-len 2048 \
  --parallel dp=124,pp=1,tp=8,microbatches=1,recompute=full,zero=3

# 5. Llama 3 405B on 8192 and 16384 H100 (Llama 3 paper, Table 4): tp8 pp16 dp64/dp128,
#    16M tokens (2048 x 8192), micro-batch 1, no recomputation, FSDP (ZeRO-2-like);
#    430 / 400 TFLOP/s per GPU (43% / 41% BF16 MFU).
for n in 8192 16384; do
  dp=$(( n / 128 )); mb=$(( 2048 / dp ))
  A=(--model-config $M/llama3-405b.json --batch 2048 --seq-len 8192)
  search "Llama 3 405B, $n H100" "${A[@]}" --flavor-file $C/meta-h100-$n.json
  # On 8192 GPUs nothing fits the default 80% of memory: the whole 80 GiB.
  [ $n != 8192 ] || search "Llama 3 405B, $n H100, --usable-memory 1" "${A[@]}" \
    --flavor-file $C/meta-h100-$n.json --usable-memory 1
  pinned "Llama 3 405B, $n H100: published split (cost only: vacc's memory model gives ~290 GiB)" \
    "${A[@]}" --flavor-file "$BIG/meta-h100-$n.json" \
    --parallel dp=$dp,pp=16,tp=8,microbatches=$mb,recompute=none,zero=2
done
