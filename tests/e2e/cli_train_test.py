#!/usr/bin/python3
"""End-to-end checks of `vacc train`: the step log, the metrics file, determinism across runs,
and one clear error (exit code 1, no traceback) for each kind of bad input."""
import json
import os
import re
import subprocess
import sys
import tempfile

VACC, CONFIG = sys.argv[1], sys.argv[2]
from e2e_checks import check, finish  # noqa: E402


def train(*extra, metrics=None):
    cmd = [VACC, "train", "--model-config", CONFIG, "--synthetic", "--batch", "2", "--seq-len", "32",
           "--steps", "3", "--lr", "1e-3"] + list(extra)
    if metrics:
        cmd += ["--metrics-out", metrics]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


with tempfile.TemporaryDirectory() as tmp:
    m1, m2 = os.path.join(tmp, "a.jsonl"), os.path.join(tmp, "b.jsonl")
    r = train(metrics=m1)
    check(r.returncode == 0, f"train exits 0 (got {r.returncode}: {r.stderr})")
    steps = re.findall(r"\[Step (\d+)/3\] \| Loss: ([0-9.]+) \| Duration: ([0-9.]+) s \| "
                       r"Throughput: ([0-9.]+) tokens/sec", r.stdout)
    check(len(steps) == 3, f"three step lines in the seed's form:\n{r.stdout}")
    rows = [json.loads(l) for l in open(m1)]
    check(len(rows) == 3, "three metrics rows")
    for row in rows:
        for key in ("step", "loss", "step_time_s", "tokens_per_sec", "mfu"):
            check(key in row, f"metrics row has {key}: {row}")
        check(row["tokens_per_sec"] > 0 and 0 < row["mfu"] < 1.5, f"plausible throughput/MFU: {row}")
    check([r_["step"] for r_ in rows] == [1, 2, 3], "steps numbered 1..3")

    r2 = train(metrics=m2)
    check([x["loss"] for x in rows] == [json.loads(l)["loss"] for l in open(m2)],
          "the same seed gives the same losses")
    r3 = train("--dtype", "bf16", "--micro-batches", "2")
    check(r3.returncode == 0, f"bf16 with micro-batches runs: {r3.stderr}")

    bad_config = os.path.join(tmp, "bad.json")
    with open(bad_config, "w") as f:
        f.write('{"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10}')
    cases = [
        ([VACC, "train", "--model-config", bad_config, "--synthetic"], "hidden_size"),
        ([VACC, "train", "--model-config", os.path.join(tmp, "missing.json"), "--synthetic"], "missing.json"),
        ([VACC, "train", "--model-config", CONFIG, "--synthetic", "--dtype", "fp8"], "fp8"),
        ([VACC, "train", "--model-config", CONFIG, "--synthetic", "--batch", "3", "--micro-batches", "2"], "micro-batches"),
        # The planner finds no split that fits and says so, naming the budget ...
        ([VACC, "train", "--model-config", CONFIG, "--synthetic", "--memory-budget", "1m"], "memory budget"),
        # ... and a split the user pinned whole runs until the allocator stops it.
        ([VACC, "train", "--model-config", CONFIG, "--synthetic", "--memory-budget", "1m", "--parallel",
          "dp=1,pp=1,tp=1,zero=0,microbatches=1,recompute=none"], "exceed the budget"),
        ([VACC, "train", "--model-config", CONFIG, "--synthetic", "--seq-len", "100000"], "max_position_embeddings"),
        ([VACC, "train", "--model-config", CONFIG], "--synthetic"),
    ]
    if not os.path.exists("/dev/nvidia0"):
        # A GPU flavor without a GPU (or without the CUDA backend): one line saying why.
        cases.append(([VACC, "train", "--model-config", CONFIG, "--synthetic", "--flavor", "gpu-1"],
                      "gpu-1"))
    for cmd, fragment in cases:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        check(r.returncode == 1, f"{' '.join(cmd[2:])}: exit code 1 (got {r.returncode})")
        check(fragment in r.stderr and r.stderr.count("\n") <= 2,
              f"{' '.join(cmd[2:])}: one line naming {fragment!r}, got: {r.stderr!r}")

finish("cli_train")
