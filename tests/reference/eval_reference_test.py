#!/usr/bin/python3
"""`vacc eval` against PyTorch: a small Qwen2 model made by `vacc init` and trained a few
steps by `vacc train` (so no weight is trivially 0 or 1), evaluated by `vacc eval --json`
on a pre-tokenized dataset with sequences shorter and longer than --seq-len, and by a
float64 PyTorch forward pass over the saved checkpoint (Hugging Face convention: labels are
the input ids, shifted; n tokens predict n - 1). The mean losses must agree within 1e-5
relative and the token counts exactly.

usage: eval_reference_test.py VACC"""
import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_hf_folder  # noqa: E402  (read_weights)
import make_model_reference  # noqa: E402  (forward)

VACC = sys.argv[1]
SEQ = 24
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 300,
    "hidden_size": 64, "intermediate_size": 112, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


with tempfile.TemporaryDirectory() as tmp:
    cfg_path = os.path.join(tmp, "config.json")
    json.dump(CONFIG, open(cfg_path, "w"))
    gen = torch.Generator().manual_seed(11)
    lengths = [5, 9, 24, 30, 17, 2, 40, 13]
    seqs = [torch.randint(0, CONFIG["vocab_size"], (n,), generator=gen).tolist() for n in lengths]
    data = os.path.join(tmp, "data.jsonl")
    with open(data, "w") as f:
        for s in seqs:
            f.write(json.dumps({"input_ids": s}) + "\n")

    model, tuned = os.path.join(tmp, "model"), os.path.join(tmp, "tuned")
    run(VACC, "init", "--config", cfg_path, "--seed", "5", model)
    run(VACC, "train", "--model", model, "--data", data, "--steps", "3", "--batch", "2",
        "--seq-len", str(SEQ), "--lr", "1e-2", "--save", tuned)
    got = json.loads(run(VACC, "eval", "--model", tuned, "--data", data, "--seq-len", str(SEQ),
                         "--json").strip().splitlines()[-1])

    weights, _ = check_hf_folder.read_weights(tuned)
    if check_hf_folder.failures:
        sys.exit(f"reading {tuned} failed: {check_hf_folder.failures}")
    p = {k: v.double() for k, v in weights.items()}
    cfg = json.load(open(os.path.join(tuned, "config.json")))
    total, tokens = 0.0, 0
    for s in seqs:
        ids = torch.tensor(s[:SEQ])[None]
        if ids.shape[1] < 2:
            continue
        logits = make_model_reference.forward(cfg, p, ids)[0]
        total += torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").item()
        tokens += ids.shape[1] - 1
    want = total / tokens
    print(f"vacc eval: loss {got['loss']:.8f} over {got['tokens']} tokens; "
          f"PyTorch float64: {want:.8f} over {tokens}")
    if got["tokens"] != tokens:
        sys.exit(f"token counts differ: vacc {got['tokens']}, PyTorch {tokens}")
    if abs(got["loss"] - want) > 1e-5 * abs(want):
        sys.exit(f"losses differ by {abs(got['loss'] - want) / want:.2e} relative (bound 1e-5)")
print("vacc eval agrees with PyTorch")
