#!/usr/bin/env python3
"""The planner's predictions against measurement on local CPU flavors: for each split, the
predicted step time and peak memory (`vacc plan --json` with every dimension pinned and the
CPU peak given) against `vacc train --synthetic` (the fastest step after the first, and the
allocator's high-water mark). Prints a Markdown table for docs/PLANNER.md.
Usage: plan_accuracy.py VACC CONFIG PEAK_GFLOPS_PER_DEVICE [--batch 8 --seq-len 256 --steps 3]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser()
p.add_argument("vacc")
p.add_argument("config")
p.add_argument("peak_gflops", type=float, help="per device, from `vacc train`'s log")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--flavor", default="cpu-2")
p.add_argument("splits", nargs="*", default=[
    "dp=2,pp=1,tp=1,microbatches=1,recompute=none,zero=0",
    "dp=2,pp=1,tp=1,microbatches=1,recompute=full,zero=0",
    "dp=2,pp=1,tp=1,microbatches=2,recompute=none,zero=2",
    "dp=1,pp=2,tp=1,microbatches=4,recompute=none,zero=0",
    "dp=1,pp=1,tp=2,microbatches=1,recompute=none,zero=0",
])
args = p.parse_args()

print(f"| flavor | split | predicted step | measured step | error | predicted peak | measured peak | error |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
with tempfile.TemporaryDirectory() as tmp:
    for split in args.splits:
        common = ["--model-config", args.config, "--batch", str(args.batch), "--seq-len",
                  str(args.seq_len), "--flavor", args.flavor, "--parallel", split]
        plan = subprocess.run([args.vacc, "plan", "--json", "--dtype", "f32", "--device-peak-tflops",
                               str(args.peak_gflops / 1000)] + common, capture_output=True, text=True)
        if plan.returncode != 0:
            sys.exit(plan.stderr)
        chosen = json.loads(plan.stdout)["chosen"]
        metrics = os.path.join(tmp, "m.jsonl")
        r = subprocess.run([args.vacc, "train", "--synthetic", "--steps", str(args.steps),
                            "--metrics-out", metrics] + common, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(r.stdout + r.stderr)
        rows = [json.loads(l) for l in open(metrics).read().splitlines()]
        step = min(x["step_time_s"] for x in rows[1:] or rows)
        peak = max(max(x["peak_memory_bytes"]) for x in rows)
        ps, pm = chosen["predicted_step_time_s"], chosen["predicted_peak_memory_bytes"]
        print(f"| {args.flavor} | {split} | {ps:.2f} s | {step:.2f} s | {100 * (ps - step) / step:+.0f}% | "
              f"{pm / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {100 * (pm - peak) / peak:+.1f}% |",
              flush=True)
