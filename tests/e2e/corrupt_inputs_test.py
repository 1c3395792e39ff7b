#!/usr/bin/python3
"""Each corrupt or wrong input gets one clear error (exit status 1, one line naming the file,
line, tensor or limit), never a crash or a hang. CTest runs this against the normal build
and against an AddressSanitizer build of vacc (corrupt_inputs_asan), where any memory error
would show up as an ASan report and a different exit status.

usage: corrupt_inputs_test.py VACC"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

VACC = sys.argv[1]
CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 256,
          "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
          "tie_word_embeddings": True}
failures = []


def vacc(*args):
    return subprocess.run([VACC, *args], capture_output=True, text=True, timeout=300)


def expect_error(what, args, fragments):
    r = vacc(*args)
    err = r.stderr.strip()
    ok = r.returncode == 1 and "AddressSanitizer" not in r.stderr and len(err.splitlines()) == 1
    ok = ok and all(f in err for f in fragments)
    print(("ok   " if ok else "FAIL ") + f"{what}: exit {r.returncode}: {err[:300]}")
    if not ok:
        failures.append(what)


def header_of(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return raw, n, json.loads(raw[8:8 + n])


def with_header(raw, n, header):
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n:]


with tempfile.TemporaryDirectory() as tmp:
    cfg = os.path.join(tmp, "config.json")
    json.dump(CONFIG, open(cfg, "w"))
    good = os.path.join(tmp, "good")
    r = vacc("init", "--config", cfg, "--seed", "1", good)
    if r.returncode != 0:
        sys.exit(f"init failed: {r.stderr}")
    data = os.path.join(tmp, "data.jsonl")
    with open(data, "w") as f:
        for i in range(6):
            f.write(json.dumps({"input_ids": [(7 * i + j) % 256 for j in range(10)]}) + "\n")
    weights = "model.safetensors"

    def variant(name, mutate):
        d = os.path.join(tmp, name)
        shutil.copytree(good, d)
        mutate(d)
        return d

    def eval_args(model):
        return ["eval", "--model", model, "--data", data, "--seq-len", "16"]

    raw, n, header = header_of(os.path.join(good, weights))
    names = [k for k in header if k != "__metadata__"]
    first = min(names, key=lambda k: header[k]["data_offsets"][0])
    second = sorted(names, key=lambda k: header[k]["data_offsets"][0])[1]

    def write(d, content):
        open(os.path.join(d, weights), "wb").write(content)

    d = variant("truncated", lambda d: write(d, raw[: len(raw) // 2]))
    expect_error("truncated file", eval_args(d), [weights])
    d = variant("long_header", lambda d: write(d, struct.pack("<Q", len(raw) * 4) + raw[8:]))
    expect_error("header longer than the file", eval_args(d), [weights])
    h = json.loads(json.dumps(header))
    h[second]["data_offsets"][0] -= 4
    d = variant("overlap", lambda d: write(d, with_header(raw, n, h)))
    expect_error("overlapping offsets", eval_args(d), [weights])
    h = json.loads(json.dumps(header))
    h[first]["data_offsets"][1] += 10 ** 9
    d = variant("out_of_range", lambda d: write(d, with_header(raw, n, h)))
    expect_error("out-of-range offsets", eval_args(d), [weights])
    h = json.loads(json.dumps(header))
    h[first]["dtype"] = "BF16"
    d = variant("dtype_size", lambda d: write(d, with_header(raw, n, h)))
    expect_error("dtype/size mismatch", eval_args(d), [weights, first])
    h = json.loads(json.dumps(header))
    h["model.layers.1.mlp.down_proj.weight.renamed"] = h.pop("model.layers.1.mlp.down_proj.weight")
    d = variant("missing_tensor", lambda d: write(d, with_header(raw, n, h)))
    expect_error("missing tensor", eval_args(d), ["model.layers.1.mlp.down_proj.weight"])
    c = dict(CONFIG, intermediate_size=48)
    d = variant("wrong_shape", lambda d: json.dump(c, open(os.path.join(d, "config.json"), "w")))
    expect_error("wrong shape", eval_args(d), ["mlp"])
    c = dict(CONFIG, architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox")
    d = variant("unknown_arch", lambda d: json.dump(c, open(os.path.join(d, "config.json"), "w")))
    expect_error("unknown architecture", eval_args(d), ["GPTNeoXForCausalLM"])

    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"input_ids": [1, 2, 3]}) + "\n")
        f.write('{"input_ids": [1, 2,\n')
    expect_error("bad JSON line", ["eval", "--model", good, "--data", bad, "--seq-len", "16"],
                 ["bad.jsonl", "line 2"])
    text = os.path.join(tmp, "text.jsonl")
    with open(text, "w") as f:
        f.write(json.dumps({"text": "hello"}) + "\n")
    expect_error("missing tokenizer", ["eval", "--model", good, "--data", text, "--seq-len", "16"],
                 ["tokenizer"])
    expect_error("missing tokenizer folder",
                 ["generate", "--model", good, "--tokenizer", os.path.join(tmp, "none"), "--prompt", "hi"],
                 ["none"])
    expect_error("model folder missing", eval_args(os.path.join(tmp, "nowhere")), ["nowhere"])
    # Sampling options that make no sampling, refused before the model is read.
    expect_error("generate with a NaN temperature",
                 ["generate", "--model", good, "--prompt", "hi", "--temperature", "nan"],
                 ["temperature", "nan"])
    expect_error("generate with a NaN top_p",
                 ["generate", "--model", good, "--prompt", "hi", "--top-p", "nan"], ["top_p", "nan"])
    expect_error("generate with no new tokens",
                 ["generate", "--model", good, "--prompt", "hi", "--max-new-tokens=0"],
                 ["--max-new-tokens", "0"])
    if not os.path.exists("/dev/nvidia0"):
        # A GPU flavor without a GPU (or a vacc without the CUDA backend) says why.
        expect_error("eval on a GPU flavor without a GPU", eval_args(good) + ["--flavor", "gpu-1"],
                     ["gpu-1"])
        expect_error("generate on a GPU flavor without a GPU",
                     ["generate", "--model", good, "--prompt", "hi", "--flavor", "gpu-1"], ["gpu-1"])

if failures:
    sys.exit(f"{len(failures)} case(s) failed: {failures}")
print("every corrupt input got one clear error")
