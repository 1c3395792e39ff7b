#!/usr/bin/python3
"""Every supported way to split a job, on cpu-4 and cpu-8, against cpu-1: per-step losses
within 1e-5 relative (fp32) over 10 steps, for tied and untied embeddings and a GQA model;
pipeline stages x data parallel x ZeRO stage x micro-batches x schedule (x tensor parallel
and recomputation where supported). Also each impossible combination's clear error."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_read import max_abs_difference, read_safetensors  # noqa: E402

VACC = sys.argv[1]
from e2e_checks import check, finish  # noqa: E402
STEPS = 10


def config(tied, layers=4, heads=4, kv=2, bias=True):
    return {
        "architectures": ["Qwen2ForCausalLM" if bias else "LlamaForCausalLM"],
        "model_type": "qwen2" if bias else "llama", "vocab_size": 320, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "max_position_embeddings": 64, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "initializer_range": 0.02, "tie_word_embeddings": tied,
        "hidden_act": "silu", "torch_dtype": "float32",
    }


def losses(cfg_path, flavor, parallel, batch=8, save=None):
    """The per-step losses at full precision (from --metrics-out), and the log."""
    metrics = cfg_path + ".metrics.jsonl"
    cmd = [VACC, "train", "--model-config", cfg_path, "--synthetic", "--batch", str(batch),
           "--seq-len", "16", "--steps", str(STEPS), "--lr", "3e-3", "--weight-decay", "0.01",
           "--flavor", flavor, "--metrics-out", metrics] + (["--save", save] if save else [])
    if parallel:
        cmd += ["--parallel", parallel]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return None, r.stdout[-2000:] + r.stderr[-2000:]
    return [json.loads(line)["loss"] for line in open(metrics)], r.stdout


def compare(tag, got, base):
    if got is None:
        return
    worst = max(abs(a - b) / abs(b) for a, b in zip(got, base))
    check(len(got) == STEPS and worst <= 1e-5, f"{tag}: losses within 1e-5 of cpu-1 (worst {worst:.2e})")
    print(f"{tag}: worst {worst:.1e}", flush=True)


# (flavor, --parallel) pairs.
COMBOS = [
    ("cpu-4", "tp=4"),
    ("cpu-4", "tp=2,dp=2,zero=3,recompute=selective"),
    ("cpu-4", "tp=2,pp=2,microbatches=2,recompute=full"),
    ("cpu-8", "dp=2,pp=2,tp=2,microbatches=4,recompute=full,zero=1"),
    ("cpu-8", "tp=2,pp=4,microbatches=4,schedule=gpipe,zero=2"),
    ("cpu-8", "tp=4,dp=2,zero=2,recompute=selective"),
    ("cpu-4", "pp=2,dp=2"),
    ("cpu-4", "pp=2,dp=2,zero=1,microbatches=2"),
    ("cpu-4", "pp=4,microbatches=4"),
    ("cpu-4", "pp=4,microbatches=8,schedule=gpipe"),
    ("cpu-4", "pp=2,dp=2,zero=3,microbatches=2"),
    ("cpu-8", "pp=4,dp=2,zero=2,microbatches=2"),
    ("cpu-8", "pp=2,dp=4,zero=1"),
    ("cpu-8", "pp=2,dp=4,zero=3,microbatches=2,schedule=gpipe"),
]
EXTRA = os.environ.get("VACC_EXTRA_COMBOS", "")  # "cpu-4:tp=2,pp=2;..." for local exploring
for item in filter(None, EXTRA.split(";")):
    flavor, parallel = item.split(":")
    COMBOS.append((flavor, parallel))

with tempfile.TemporaryDirectory() as tmp:
    models = {"tied-gqa": config(True), "untied": config(False, bias=False, kv=4)}
    for name, cfg in models.items():
        path = os.path.join(tmp, name + ".json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        base_dir = os.path.join(tmp, name + "-cpu1")
        base, out = losses(path, "cpu-1", "", save=base_dir)
        check(base is not None, f"{name}: cpu-1 runs: {out}")
        if base is None:
            continue
        for i, (flavor, parallel) in enumerate(COMBOS):
            # Some runs also save: the folder must hold the weights cpu-1 saved.
            save = os.path.join(tmp, f"{name}-{i}") if "tp=" in parallel and "pp=" in parallel else None
            got, out = losses(path, flavor, parallel, save=save)
            check(got is not None, f"{name} {flavor} {parallel}: runs: {out}")
            compare(f"{name} {flavor} {parallel}", got, base)
            if save and got is not None:
                worst, scale = max_abs_difference(read_safetensors(save), read_safetensors(base_dir))
                check(worst is not None and worst <= 1e-4 * max(1.0, scale),
                      f"{name} {flavor} {parallel}: saved weights equal cpu-1's (worst {worst})")

    # --trace: one step of every rank as Chrome trace JSON (what Perfetto opens).
    path = os.path.join(tmp, "tied-gqa.json")
    trace = os.path.join(tmp, "trace.json")
    r = subprocess.run([VACC, "train", "--model-config", path, "--synthetic", "--batch", "8",
                        "--seq-len", "16", "--steps", "3", "--flavor", "cpu-4", "--parallel",
                        "pp=4,microbatches=4", "--trace", trace], capture_output=True, text=True,
                       timeout=600)
    check(r.returncode == 0 and os.path.exists(trace), f"--trace writes {trace}: {r.stderr}")
    if os.path.exists(trace):
        events = json.load(open(trace))["traceEvents"]
        spans = [e for e in events if e["ph"] == "X"]
        names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
        check(sorted(names) == [0, 1, 2, 3] and "stage 3" in names[3], f"one named process per rank: {names}")
        for rank in range(4):
            mine = sorted((e for e in spans if e["pid"] == rank and e["cat"] in ("forward", "backward")),
                          key=lambda e: e["ts"])
            kinds = [e["name"].split()[0] for e in mine]
            kinds = [k for k in kinds if k in ("forward", "backward")]
            check(kinds.count("forward") == 4 and kinds.count("backward") == 4,
                  f"rank {rank}: 4 forward and 4 backward spans: {kinds}")
            # 1F1B: stage s runs 3 - s warm-up forwards, then alternates one forward and one
            # backward: 4 - s forwards come before its first backward.
            check("backward" in kinds and kinds.index("backward") == 4 - rank,
                  f"rank {rank}: 1F1B order {kinds}")
        check(any(e["cat"] == "pipeline" for e in spans), "pipeline send/recv spans")

    for flavor, parallel, needle in [
        ("cpu-4", "pp=8", "8 does not divide the accelerator's 4 devices"),
        ("cpu-4", "pp=2,dp=4", "needs 8 devices"),
        ("cpu-8", "pp=8", "more pipeline stages than the 4 layers"),
        ("cpu-4", "pp=2,dp=2,microbatches=3", "multiple of 6"),
        ("cpu-4", "pp=3", "does not divide"),
        ("cpu-4", "tp=3", "does not divide"),
        ("cpu-4", "schedule=zigzag", "1f1b or gpipe"),
        ("cpu-4", "recompute=most", "selective"),
    ]:
        r = subprocess.run([VACC, "train", "--model-config", path, "--synthetic", "--batch", "8",
                            "--seq-len", "16", "--steps", "1", "--flavor", flavor, "--parallel",
                            parallel], capture_output=True, text=True, timeout=60)
        check(r.returncode == 1 and needle in r.stderr and r.stderr.count("error") == 1,
              f"{flavor} --parallel {parallel}: one clear error mentioning '{needle}': {r.stderr}")

finish("parallel_combinations")
