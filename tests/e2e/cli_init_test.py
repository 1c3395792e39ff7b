#!/usr/bin/python3
"""End-to-end checks of `vacc init`: a model from a config.json and from a preset (with and
without a tokenizer), --config-only for a large preset, shards and bf16, re-initialising a
model folder, the folders read back as Hugging Face expects (tests/reference/check_hf_folder.py),
and one clear error (exit code 1, one line) for each kind of bad input.

Usage: cli_init_test.py VACC CONFIG.json (configs/tiny-qwen2.json: vocabulary 4096)
"""
import json
import os
import subprocess
import sys
import tempfile
import time

VACC, CONFIG = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import check_hf_folder  # noqa: E402

from e2e_checks import check, failures, finish  # noqa: E402


def fake_qwen_tokenizer(folder):
    """A stand-in for the cached Qwen tokenizer: the real one's id range (151643 BPE tokens,
    added tokens up to 151668), few entries."""
    os.makedirs(folder, exist_ok=True)
    vocab = {"a": 0, "b": 1, "\u0120the": 151642}
    added = [{"id": 151643 + i, "content": f"<|special_{i}|>", "special": True} for i in range(26)]
    added[0]["content"] = "<|endoftext|>"
    json.dump({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []},
               "added_tokens": added}, open(os.path.join(folder, "tokenizer.json"), "w"))
    json.dump({"eos_token": "<|endoftext|>"}, open(os.path.join(folder, "tokenizer_config.json"), "w"))


def safetensors_files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))


with tempfile.TemporaryDirectory() as tmp:
    home = os.path.join(tmp, "home")
    fake_qwen_tokenizer(os.path.join(home, "cache", "tokenizers", "qwen"))
    env = dict(os.environ, VACC_HOME=home)
    bare_env = dict(os.environ, VACC_HOME=os.path.join(tmp, "empty-home"))

    def init(*args, environ=env):
        return subprocess.run([VACC, "init"] + list(args), capture_output=True, text=True,
                              timeout=300, env=environ)

    # 1. From a config whose vocabulary (4096) is smaller than the tokenizer's: no tokenizer.
    small = os.path.join(tmp, "small")
    r = init("--config", CONFIG, "--seed", "7", small)
    check(r.returncode == 0, f"init --config exits 0 (got {r.returncode}: {r.stderr})")
    check("no tokenizer attached" in r.stdout and "4096" in r.stdout,
          f"a note says why no tokenizer is attached:\n{r.stdout}")
    check(sorted(os.listdir(small)) == ["config.json", "generation_config.json", "model.safetensors"],
          f"config, generation config and one weights file: {sorted(os.listdir(small))}")
    source = json.load(open(CONFIG))
    check_hf_folder.check_folder(small, source, fresh=True)

    # The same seed gives the same bytes; another seed other values.
    again = os.path.join(tmp, "again")
    init("--config", CONFIG, "--seed", "7", again)
    other = os.path.join(tmp, "other")
    init("--config", CONFIG, "--seed", "8", other)
    weights = lambda d: open(os.path.join(d, "model.safetensors"), "rb").read()
    check(weights(small) == weights(again), "the same seed writes the same weights")
    check(weights(small) != weights(other), "another seed writes other weights")

    # 2. Re-initialising the folder as bf16 shards replaces the single file.
    r = init("--config", CONFIG, "--seed", "7", "--dtype", "bf16", "--max-shard-size", "1MB", small)
    check(r.returncode == 0, f"re-init into a model folder exits 0: {r.stderr}")
    files = safetensors_files(small)
    check(len(files) >= 2 and "model.safetensors" not in files and
          os.path.exists(os.path.join(small, "model.safetensors.index.json")),
          f"bf16 shards and an index replace model.safetensors: {sorted(os.listdir(small))}")
    check(json.load(open(os.path.join(small, "config.json")))["torch_dtype"] == "bfloat16",
          "config.json says bfloat16")
    check_hf_folder.check_folder(small, source, fresh=True)

    # 3. The tiny preset gets the (cached) Qwen tokenizer.
    tiny = os.path.join(tmp, "tiny")
    r = init("--preset", "tiny", tiny)
    check(r.returncode == 0, f"init --preset tiny exits 0: {r.stderr}")
    check(os.path.exists(os.path.join(tiny, "tokenizer.json")) and
          os.path.exists(os.path.join(tiny, "tokenizer_config.json")),
          f"the tokenizer is attached: {sorted(os.listdir(tiny))}")
    cfg = check_hf_folder.check_folder(tiny, fresh=True) and json.load(open(os.path.join(tiny, "config.json")))
    if cfg:
        check((cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["tie_word_embeddings"])
              == (151936, 64, 2, True), f"tiny's shape: {cfg}")

    # 4. --config-only of the largest preset: config fields, no weights, fast.
    big = os.path.join(tmp, "llama")
    start = time.time()
    r = init("--preset", "llama3-8b", "--config-only", big)
    elapsed = time.time() - start
    check(r.returncode == 0, f"--config-only llama3-8b exits 0: {r.stderr}")
    check(elapsed < 5, f"--config-only is fast ({elapsed:.1f} s)")
    check(safetensors_files(big) == [], f"no weights with --config-only: {os.listdir(big)}")
    cfg = json.load(open(os.path.join(big, "config.json")))
    want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "attention_bias": False,
            "bos_token_id": 128000, "eos_token_id": 128001}
    for key, value in want.items():
        check(cfg.get(key) == value, f"llama3-8b config {key} = {cfg.get(key)!r}, want {value!r}")
    r = init("--preset", "qwen2.5-7b", "--config-only", os.path.join(tmp, "q7"))
    cfg = json.load(open(os.path.join(tmp, "q7", "config.json")))
    check((cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
           cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"],
           cfg["tie_word_embeddings"], cfg["rope_theta"]) ==
          (3584, 18944, 28, 28, 4, 152064, False, 1000000.0), f"qwen2.5-7b config: {cfg}")
    check(os.path.exists(os.path.join(tmp, "q7", "tokenizer.json")), "qwen2.5-7b gets the tokenizer")

    # What an interrupted init left (its staging folder) does not block the next one.
    interrupted = os.path.join(tmp, "interrupted")
    os.makedirs(os.path.join(interrupted, ".vacc-save.tmp"))
    open(os.path.join(interrupted, ".vacc-save.tmp", "model.safetensors.tmp"), "w").write("partial")
    r = init("--config", CONFIG, interrupted)
    check(r.returncode == 0, f"init over an interrupted init exits 0: {r.stderr}")
    check(sorted(os.listdir(interrupted)) == ["config.json", "generation_config.json", "model.safetensors"],
          f"the leftovers are cleaned up: {sorted(os.listdir(interrupted))}")

    # 5. Bad input: exit 1, one line naming the problem, nothing written.
    a_file = os.path.join(tmp, "a-file")
    open(a_file, "w").write("x")
    not_model = os.path.join(tmp, "not-a-model")
    os.makedirs(not_model)
    open(os.path.join(not_model, "notes.txt"), "w").write("mine")
    cases = [
        (["--preset", "gpt5", os.path.join(tmp, "x1")], env, "unknown preset"),
        (["--config", os.path.join(tmp, "missing.json"), os.path.join(tmp, "x2")], env, "missing.json"),
        (["--preset", "tiny", a_file], env, "not a folder"),
        (["--preset", "tiny", not_model], env, "not empty"),
        (["--preset", "tiny", "--config", CONFIG, os.path.join(tmp, "x3")], env, "either"),
        ([os.path.join(tmp, "x4")], env, "either"),
        (["--preset", "tiny", "--dtype", "fp8", os.path.join(tmp, "x5")], env, "fp8"),
        (["--preset", "tiny", "--max-shard-size", "lots", os.path.join(tmp, "x6")], env, "--max-shard-size"),
        (["--preset", "tiny", "--tokenizer", os.path.join(tmp, "home"), os.path.join(tmp, "x7")], env, "tokenizer.json"),
        (["--preset", "tiny", os.path.join(tmp, "x8")], bare_env, "scripts/setup.sh"),
    ]
    for args, environ, fragment in cases:
        r = init(*args, environ=environ)
        what = " ".join(a.replace(tmp, "TMP") for a in args)
        check(r.returncode == 1, f"init {what}: exit code 1 (got {r.returncode}: {r.stderr})")
        check(fragment in r.stderr and r.stderr.count("\n") == 1 and "error" in r.stderr,
              f"init {what}: one line naming {fragment!r}, got: {r.stderr!r}")
        out = args[-1]
        if out not in (a_file, not_model):
            check(not os.path.exists(out), f"init {what}: nothing written to {out}")
    check(open(a_file).read() == "x" and os.listdir(not_model) == ["notes.txt"],
          "the file and the foreign folder are untouched")

failures += check_hf_folder.failures
finish("cli_init")
