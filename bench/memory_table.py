#!/usr/bin/python3
"""Per-rank peak memory (the allocator's high-water mark, from --metrics-out) of a table of
splits (pp, tp, recompute, ZeRO) against the memory model's prediction (`vacc plan --json`),
for the benchmark model. Prints a markdown table for docs/memory.md.

Usage: bench/memory_table.py [--vacc build/bin/vacc] [--batch 8] [--seq-len 256]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pinned_split import pin_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser()
p.add_argument("--vacc", default=os.path.join(ROOT, "build/bin/vacc"))
p.add_argument("--config", default=os.path.join(ROOT, "configs/bench-qwen2-40m.json"))
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq-len", type=int, default=256)
args = p.parse_args()

SPLITS = [
    ("cpu-1", "recompute=none"), ("cpu-1", "recompute=selective"), ("cpu-1", "recompute=full"),
    ("cpu-4", "dp=4,zero=0"), ("cpu-4", "dp=4,zero=1"), ("cpu-4", "dp=4,zero=2"),
    ("cpu-4", "dp=4,zero=3"),
    ("cpu-4", "pp=2,dp=2,microbatches=2"), ("cpu-4", "pp=4,microbatches=4"),
    ("cpu-4", "pp=4,microbatches=4,schedule=gpipe"), ("cpu-4", "pp=4,microbatches=4,recompute=full"),
    ("cpu-4", "tp=2,dp=2"), ("cpu-4", "tp=4"), ("cpu-4", "tp=4,recompute=selective"),
    ("cpu-4", "pp=2,tp=2,microbatches=2,zero=1"), ("cpu-4", "pp=2,tp=2,microbatches=2,recompute=full"),
]

print("| flavor | split | rank | measured peak | predicted | error |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
with tempfile.TemporaryDirectory() as tmp:
    for flavor, split in SPLITS:
        common = ["--model-config", args.config, "--batch", str(args.batch), "--seq-len",
                  str(args.seq_len), "--flavor", flavor, "--parallel",
                  pin_split(split, int(flavor.split("-")[1]))]
        plan = subprocess.run([args.vacc, "plan", "--fixed", "--json"] + common, capture_output=True, text=True)
        if plan.returncode != 0:
            sys.exit(plan.stderr)
        plan = json.loads(plan.stdout)
        metrics = os.path.join(tmp, "m.jsonl")
        r = subprocess.run([args.vacc, "train", "--synthetic", "--steps", "2", "--metrics-out",
                            metrics] + common, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stdout + r.stderr)
        measured = json.loads(open(metrics).read().splitlines()[-1])["peak_memory_bytes"]
        dp, tp = plan["dp"], plan["tp"]
        predicted = {(x["stage"], x["dp_rank"]): x["predicted"]["total"] for x in plan["ranks"]}
        # One row per stage (its dp rank 0, tp rank 0) and the worst error over every rank.
        for rank, got in enumerate(measured):
            stage, dp_rank, tp_rank = rank // (dp * tp), (rank // tp) % dp, rank % tp
            want = predicted[(stage, dp_rank)]
            err = (want - got) / got
            if dp_rank == 0 and tp_rank == 0:
                print(f"| {flavor} | {split} | {rank} (stage {stage}) | {got / 2**20:.1f} MiB | "
                      f"{want / 2**20:.1f} MiB | {100 * err:+.1f}% |", flush=True)
