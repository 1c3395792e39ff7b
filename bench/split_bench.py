#!/usr/bin/python3
"""Throughput of `vacc train` under different splits on this host, on the benchmark model
(configs/bench-qwen2-40m.json): cpu-2 against cpu-1, what each ZeRO stage costs against
ZeRO-0, and pipeline (pp=2) and tensor (tp=2) parallelism against data parallelism on cpu-2
and cpu-4.

cpu-1 is one device with every core; cpu-2 two devices with half the cores each, so on a
2-core machine cpu-2 / cpu-1 measures the cost of splitting at equal compute. The scaling
with devices added is cpu-2 against one device of one core (`cpu-1 --threads 1`). cpu-4 on
2 cores runs two ranks per core.

Usage: bench/split_bench.py [--vacc build/bin/vacc] [--steps 4] [--batch 8] [--seq-len 512]
"""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pinned_split import pin_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser()
p.add_argument("--vacc", default=os.path.join(ROOT, "build/bin/vacc"))
p.add_argument("--config", default=os.path.join(ROOT, "configs/bench-qwen2-40m.json"))
p.add_argument("--steps", type=int, default=4)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq-len", type=int, default=512)
p.add_argument("--dtype", default="f32")
args = p.parse_args()

RUNS = [
    ("cpu-1 (1 device, 2 threads)", "cpu-1", "", []),
    ("cpu-1 --threads 1 (1 device, 1 core)", "cpu-1", "", ["--threads", "1"]),
    ("cpu-2 ZeRO-0", "cpu-2", "zero=0", []),
    ("cpu-2 ZeRO-1", "cpu-2", "zero=1", []),
    ("cpu-2 ZeRO-2", "cpu-2", "zero=2", []),
    ("cpu-2 ZeRO-3", "cpu-2", "zero=3", []),
    ("cpu-2 pp=2 (1F1B, 8 micro-batches)", "cpu-2", "pp=2,microbatches=8", []),
    ("cpu-2 tp=2", "cpu-2", "tp=2", []),
    ("cpu-4 dp=4", "cpu-4", "dp=4", []),
    ("cpu-4 dp=2 pp=2 (4 micro-batches)", "cpu-4", "dp=2,pp=2,microbatches=4", []),
    ("cpu-4 dp=2 tp=2", "cpu-4", "dp=2,tp=2", []),
]

results = {}
print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
for name, flavor, parallel, extra in RUNS:
    cmd = [args.vacc, "train", "--model-config", args.config, "--synthetic", "--batch",
           str(args.batch), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
           "--dtype", args.dtype, "--flavor", flavor] + extra
    cmd += ["--parallel", pin_split(parallel, int(flavor.split("-")[1]))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{name} failed:\n{r.stdout}\n{r.stderr}")
    done = re.search(r"Done: ([0-9.]+) tokens/sec .*MFU ([0-9.]+)%; peak memory per device: (.*)", r.stdout)
    losses = re.findall(r"Loss: ([0-9.]+)", r.stdout)
    results[name] = float(done.group(1))
    print(f"| {name} | {float(done.group(1)):.1f} | {done.group(2)}% | {done.group(3)} | "
          f"{losses[-1]} |", flush=True)

base, one_core = results[RUNS[0][0]], results[RUNS[1][0]]
zero0 = results["cpu-2 ZeRO-0"]
print(f"cpu-2 / cpu-1 (same cores): {zero0 / base:.2f}x")
print(f"cpu-2 / one 1-core device: {zero0 / one_core:.2f}x")
for z in (1, 2, 3):
    print(f"ZeRO-{z} / ZeRO-0 on cpu-2: {results[f'cpu-2 ZeRO-{z}'] / zero0:.3f}")
print(f"pp=2 / dp=2 on cpu-2: {results['cpu-2 pp=2 (1F1B, 8 micro-batches)'] / zero0:.3f}")
print(f"tp=2 / dp=2 on cpu-2: {results['cpu-2 tp=2'] / zero0:.3f}")
dp4 = results["cpu-4 dp=4"]
print(f"dp=2 pp=2 / dp=4 on cpu-4: {results['cpu-4 dp=2 pp=2 (4 micro-batches)'] / dp4:.3f}")
print(f"dp=2 tp=2 / dp=4 on cpu-4: {results['cpu-4 dp=2 tp=2'] / dp4:.3f}")
print(f"load average after: {os.getloadavg()[0]:.2f}")
